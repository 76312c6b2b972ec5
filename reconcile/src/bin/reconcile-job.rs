//! Lambda: the nightly reconcile job, invoked by an EventBridge schedule (or by hand for a backfill).
//!
//! Configuration (environment): `METER_STORE`, `METER_ARCHIVE` (`s3://bucket/prefix`),
//! `METER_RECONCILE_LOOKBACK_DAYS` (default 3), `METER_ALERT_TOPIC` and `METER_DRIFT_ALERT_THRESHOLD`
//! (optional), the standard AWS settings, `METER_LOG`.

use meter_lambda::runtime as lambda;
use meter_reconcile::lambda::ReconcileFunction;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = ReconcileFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve(|event| function.handle(event)).await
}
