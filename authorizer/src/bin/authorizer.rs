//! Lambda: the API Gateway authorizer (REST `TOKEN`/`REQUEST`, HTTP API 2.0).
//!
//! Configuration (environment): `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`),
//! the standard AWS settings, `METER_LOG` (default `info`).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_authorizer::{AuthEvent, Authorizer, AuthorizerConfig, Decision, response};
use meter_model::SystemClock;
use meter_store::{AnyStore, StoreConfig};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("METER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).without_time().with_target(false).init();
    let config: StoreConfig = std::env::var("METER_STORE")
        .map_err(|_| "METER_STORE is not set (e.g. dynamodb:keys=ApiKeys,counters=UsageCounters)")?
        .parse()?;
    let authorizer =
        Authorizer::new(AnyStore::open(&config).await?, SystemClock, AuthorizerConfig::default());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let authorizer = &authorizer;
        async move {
            let request = AuthEvent::parse(&event.payload)?;
            let decision = match authorizer.decide(request.key()).await {
                Ok(decision) => decision,
                Err(err) => {
                    // Fail closed: API Gateway answers 500, never allows.
                    tracing::error!(error = %anyhow::Error::from(err), "authorizer cannot reach the key store");
                    return Err(Error::from("internal authorizer error"));
                }
            };
            if let Decision::Allow(grant) = &decision {
                tracing::debug!(key_id = %grant.key_id, "allowed");
            } else {
                tracing::info!(reason = decision.reason(), "refused");
            }
            // REST APIs turn exactly this error message into 401.
            response(&request, &decision).ok_or_else(|| Error::from("Unauthorized"))
        }
    }))
    .await
}
