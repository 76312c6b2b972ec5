//! Lambda: the Firehose data transformation that turns CloudWatch Logs records into archive rows.
//!
//! Configuration (environment): `METER_ARCHIVE` (`s3://bucket/prefix`, where `rejects/` and rows that
//! do not fit the response are written), `METER_STORE` (the realtime counters, e.g.
//! `dynamodb:keys=ApiKeys,counters=UsageCounters`), `METER_USAGE_ALERT_TOPIC` (optional: the SNS topic
//! customers' usage alerts are published on), the standard AWS settings, `METER_LOG`.

use meter_lambda::runtime as lambda;
use meter_realtime::lambda::ArchiveTransformerFunction;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = ArchiveTransformerFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve_with_deadline(|event, deadline| function.handle(event, deadline)).await
}
