//! Lambda: the monthly job. Issues the previous month's invoices to S3 and tells finance.
//!
//! Configuration (environment): `METER_STORE`, `METER_ARCHIVE` and `METER_REPORTS` (`s3://…`),
//! `METER_PRICING` (a file path bundled with the function, or `s3://bucket/key`), `METER_FINANCE_TOPIC`
//! (SNS topic ARN), `METER_LINK_EXPIRY_HOURS` (default 72, at most 168), the standard AWS settings,
//! `METER_LOG`.

use meter_lambda::runtime as lambda;
use meter_reports::lambda::MonthlyReportFunction;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = MonthlyReportFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve(|event| function.handle(event)).await
}
