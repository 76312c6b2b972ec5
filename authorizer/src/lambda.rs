//! The two authorizer Lambda functions, configured from their environment: the API Gateway authorizer
//! and the revocation cache invalidator (subscribed to the revocation topic).

use meter_lambda::env::{self, ConfigError};
use meter_lambda::metrics::{MetricLine, Unit};
use meter_lambda::runtime::Failure;
use meter_model::{Clock, SystemClock};
use meter_store::AnyStore;
use serde_json::Value;

use crate::invalidate::{
    ApiGatewayFlusher, FlushError, FlushTarget, flush_now_and_after_epoch_window, parse_targets,
};
use crate::{Authorizer, AuthorizerConfig, IdentitySource, InvocationError, handle};

/// The authorizer: `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`) and
/// `METER_IDENTITY_HEADER` (the header API Gateway's identity source names; default `x-api-key`).
pub struct AuthorizerFunction {
    authorizer: Authorizer<AnyStore, SystemClock>,
    identity: IdentitySource,
}

/// The metric counting the answers API Gateway turns into 401 (no key, a malformed key): Lambda
/// counts each as an error, so the errors alarm subtracts them (infra/lib/monitoring.ts).
pub const UNAUTHORIZED_ANSWERS: &str = "UnauthorizedAnswers";

/// One 401 answer as an EMF line.
#[must_use]
pub fn unauthorized_metrics(at: chrono::DateTime<chrono::Utc>) -> MetricLine {
    MetricLine::new(AuthorizerFunction::NAME, at).with(UNAUTHORIZED_ANSWERS, 1, Unit::Count)
}

impl AuthorizerFunction {
    /// The function's name in metrics.
    pub const NAME: &str = "authorizer";

    /// Reads the configuration and opens the key store.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let store = AnyStore::from_env().await?;
        let identity = env::optional("METER_IDENTITY_HEADER")
            .map_or_else(IdentitySource::default, |header| IdentitySource::header(&header));
        Ok(Self { authorizer: Authorizer::new(store, SystemClock, AuthorizerConfig::default()), identity })
    }

    /// One authorization: API Gateway's answer, or the failure API Gateway turns into 401 (exactly
    /// the message `Unauthorized`) or 500.
    pub async fn handle(&self, event: Value) -> Result<Value, Failure> {
        handle(&self.authorizer, &self.identity, &event).await.map_err(|err| match &err {
            InvocationError::Unauthorized => {
                println!("{}", unauthorized_metrics(SystemClock.now()).render());
                Failure { error_type: "Unauthorized", message: err.to_string() }
            }
            InvocationError::Internal(_) => Failure::retryable(&err),
            InvocationError::BadEvent(_) => Failure::permanent(&err),
        })
    }
}

/// The cache invalidator: `METER_FLUSH_TARGETS` (comma-separated `rest:API_ID/STAGE` or
/// `http:API_ID/STAGE`).
pub struct CacheInvalidatorFunction {
    flusher: ApiGatewayFlusher,
    targets: Vec<FlushTarget>,
}

impl CacheInvalidatorFunction {
    /// Reads the configuration and builds the API Gateway clients.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let hint = "the stages to flush: rest:API_ID/STAGE or http:API_ID/STAGE, comma-separated";
        let text = env::required("METER_FLUSH_TARGETS", hint)?;
        let targets = parse_targets(&text).map_err(|e| env::EnvError::Invalid {
            name: "METER_FLUSH_TARGETS",
            value: text.clone(),
            problem: e.to_string(),
        })?;
        Ok(Self { flusher: ApiGatewayFlusher::new(&meter_store::load_aws_config().await), targets })
    }

    /// One revocation notice: every target flushed. Any failure fails the invocation, so that SNS
    /// redelivers the notice and the flush is tried again.
    pub async fn handle(&self, event: Value) -> Result<(), Failure> {
        let notices = event.get("Records").and_then(Value::as_array).map_or(0, Vec::len);
        tracing::info!(notices, "revocation notice received");
        flush_now_and_after_epoch_window(&self.flusher, &self.targets)
            .await
            .map(drop)
            .map_err(|err| Failure::new(&err, matches!(err, FlushError::Transient { .. })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_answer_is_counted_apart_from_errors() {
        let at = meter_model::time::parse_instant("2026-12-07T10:00:00Z").unwrap();
        let line: Value = serde_json::from_str(&unauthorized_metrics(at).render()).unwrap();
        assert_eq!(
            (line["Function"].as_str(), line[UNAUTHORIZED_ANSWERS].as_u64()),
            (Some("authorizer"), Some(1))
        );
    }
}
