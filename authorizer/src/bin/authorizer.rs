//! Lambda: the API Gateway authorizer (REST `TOKEN`/`REQUEST`, HTTP API 2.0).
//!
//! Configuration (environment): `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`),
//! the standard AWS settings, `METER_LOG` (default `info`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_authorizer::{Authorizer, AuthorizerConfig, handle};
use meter_model::SystemClock;
use meter_store::{AnyStore, StoreConfig};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    meter_store::lambda::init_logging();
    let config = StoreConfig::from_env()?;
    let authorizer =
        Authorizer::new(AnyStore::open(&config).await?, SystemClock, AuthorizerConfig::default());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let authorizer = &authorizer;
        async move { handle(authorizer, &event.payload).await.map_err(|err| Error::from(err.to_string())) }
    }))
    .await
}
