//! Lambda: the API Gateway authorizer (REST `TOKEN`/`REQUEST`, HTTP API 2.0).
//!
//! Configuration (environment): `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`),
//! the standard AWS settings, `METER_LOG` (default `info`).

use meter_authorizer::lambda::AuthorizerFunction;
use meter_lambda::runtime as lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    let function = AuthorizerFunction::from_env().await.map_err(lambda::cannot_start)?;
    lambda::serve(|event| function.handle(event)).await
}
