//! Lambda: the realtime usage processor, subscribed to the API's CloudWatch Logs group.
//!
//! Configuration (environment): `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`),
//! the standard AWS settings, `METER_LOG` (log filter, default `info`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_model::{Clock, SystemClock};
use meter_realtime::{RetryPolicy, UsageProcessor};
use meter_store::{AnyStore, StoreConfig};
use serde_json::value::RawValue;

const FUNCTION: &str = "usage-processor";

#[tokio::main]
async fn main() -> Result<(), Error> {
    meter_store::lambda::init_logging();
    let config = StoreConfig::from_env()?;
    let store = AnyStore::open(&config).await?;
    let processor = UsageProcessor::new(store, SystemClock, RetryPolicy::default());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Box<RawValue>>| {
        let processor = &processor;
        async move {
            match processor.process_event(event.payload.get().as_bytes()).await {
                Ok(report) => {
                    println!("{}", report.metrics(FUNCTION, SystemClock.now()).render());
                    Ok(())
                }
                // Redelivering an undecodable payload cannot help; Firehose keeps the same data.
                Err(err) if !err.is_retryable() => {
                    tracing::warn!(error = %anyhow::Error::from(err), "dropping undecodable payload");
                    Ok(())
                }
                Err(err) => Err(Error::from(format!("{:#}", anyhow::Error::from(err)))),
            }
        }
    }))
    .await
}
