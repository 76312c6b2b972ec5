//! Lambda: subscribed to the revocation topic; flushes API Gateway's authorizer caches.
//!
//! Configuration (environment): `METER_FLUSH_TARGETS` (comma-separated `rest:API_ID/STAGE` or
//! `http:API_ID/STAGE`), the standard AWS settings, `METER_LOG`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_authorizer::invalidate::{ApiGatewayFlusher, flush_all, parse_targets};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    meter_store::lambda::init_logging();
    let targets = parse_targets(&std::env::var("METER_FLUSH_TARGETS").unwrap_or_default())?;
    if targets.is_empty() {
        return Err("METER_FLUSH_TARGETS is empty: name the stages to flush (rest:API_ID/STAGE, …)".into());
    }
    let flusher = ApiGatewayFlusher::new(&meter_store::load_aws_config().await);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (flusher, targets) = (&flusher, &targets);
        async move {
            let notices = event.payload.get("Records").and_then(Value::as_array).map_or(0, Vec::len);
            tracing::info!(notices, "revocation notice received");
            // Any failure is returned, so SNS redelivers the notice and the flush is tried again.
            flush_all(flusher, targets)
                .await
                .map_err(|e| Error::from(format!("{:#}", anyhow::Error::from(e))))?;
            Ok::<_, Error>(())
        }
    }))
    .await
}
