//! Lambda: subscribed to the revocation topic; flushes API Gateway's authorizer caches.
//!
//! Configuration (environment): `METER_FLUSH_TARGETS` (comma-separated `rest:API_ID/STAGE` or
//! `http:API_ID/STAGE`), the standard AWS settings, `METER_LOG`.

use meter_authorizer::lambda::CacheInvalidatorFunction;
use meter_lambda::runtime as lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = CacheInvalidatorFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve(|event| function.handle(event)).await
}
