//! Lambda: the function URL behind the finance message's signed links. Checks a link's signature and
//! expiry and redirects to a presigned link to the file, signed that moment.
//!
//! Configuration (environment): `METER_REPORTS` (`s3://…`), `METER_LINKS_KEY` (the KMS HMAC key), the
//! standard AWS settings, `METER_LOG`.

use meter_lambda::runtime as lambda;
use meter_reports::lambda::ReportLinksFunction;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = ReportLinksFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve(|event| function.handle(event)).await
}
