//! Lambda: the realtime usage processor, subscribed to the API's CloudWatch Logs group.
//!
//! Configuration (environment): `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`),
//! the standard AWS settings, `METER_LOG` (log filter, default `info`).

use meter_realtime::lambda::UsageProcessorFunction;
use meter_store::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = UsageProcessorFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve(|event| function.handle(event)).await
}
