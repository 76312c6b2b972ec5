//! The revocation invalidator: on each revocation notice, flush API Gateway's authorizer result cache
//! for the configured stages (`FlushStageAuthorizersCache` for REST APIs, `ResetAuthorizersCache` for
//! HTTP APIs), so that not even API Gateway's own cache serves a revoked key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_apigateway::error::{ProvideErrorMetadata, SdkError};

/// A stage whose authorizer cache is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushTarget {
    /// A REST API stage.
    Rest {
        /// The REST API id.
        api_id: String,
        /// The stage.
        stage: String,
    },
    /// An HTTP API stage.
    Http {
        /// The HTTP API id.
        api_id: String,
        /// The stage.
        stage: String,
    },
}

/// A target that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a flush target: use rest:API_ID/STAGE or http:API_ID/STAGE, comma-separated")]
pub struct FlushTargetError(String);

impl FromStr for FlushTarget {
    type Err = FlushTargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = || FlushTargetError(text.to_owned());
        let (kind, rest) = text.trim().split_once(':').ok_or_else(fail)?;
        let (api_id, stage) = rest.split_once('/').ok_or_else(fail)?;
        if api_id.is_empty() || stage.is_empty() || stage.contains('/') {
            return Err(fail());
        }
        let (api_id, stage) = (api_id.to_owned(), stage.to_owned());
        match kind {
            "rest" => Ok(Self::Rest { api_id, stage }),
            "http" => Ok(Self::Http { api_id, stage }),
            _ => Err(fail()),
        }
    }
}

impl fmt::Display for FlushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rest { api_id, stage } => write!(f, "rest:{api_id}/{stage}"),
            Self::Http { api_id, stage } => write!(f, "http:{api_id}/{stage}"),
        }
    }
}

/// Parses a comma-separated list of targets.
pub fn parse_targets(text: &str) -> Result<Vec<FlushTarget>, FlushTargetError> {
    text.split(',').filter(|t| !t.trim().is_empty()).map(str::parse).collect()
}

/// Why a flush failed.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The API or stage does not exist.
    #[error("{0}: the API or the stage does not exist")]
    NotFound(FlushTarget),
    /// Throttled or briefly failing; worth retrying.
    #[error("{target}: API Gateway is throttling or briefly failing")]
    Transient {
        /// The target.
        target: FlushTarget,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else (permissions, configuration).
    #[error("{target}: the flush failed")]
    Failed {
        /// The target.
        target: FlushTarget,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Flushing one stage's authorizer cache.
pub trait CacheFlusher: Send + Sync {
    /// Flushes `target`.
    fn flush(&self, target: &FlushTarget) -> impl Future<Output = Result<(), FlushError>> + Send;
}

/// The API Gateway implementation.
#[derive(Debug, Clone)]
pub struct ApiGatewayFlusher {
    rest: aws_sdk_apigateway::Client,
    http: aws_sdk_apigatewayv2::Client,
}

impl ApiGatewayFlusher {
    /// A flusher from the loaded AWS configuration.
    #[must_use]
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self { rest: aws_sdk_apigateway::Client::new(sdk), http: aws_sdk_apigatewayv2::Client::new(sdk) }
    }
}

fn flush_error<E, R>(target: &FlushTarget, err: SdkError<E, R>) -> FlushError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let target = target.clone();
    let code = match &err {
        SdkError::ServiceError(context) => context.err().code().map(str::to_owned),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Some("Timeout".to_owned()),
        _ => None,
    };
    match code.as_deref() {
        Some("NotFoundException") => FlushError::NotFound(target),
        Some(
            "TooManyRequestsException" | "ServiceUnavailableException" | "Timeout" | "InternalServerError",
        ) => FlushError::Transient { target, source: err.into() },
        _ => FlushError::Failed { target, source: err.into() },
    }
}

impl CacheFlusher for ApiGatewayFlusher {
    async fn flush(&self, target: &FlushTarget) -> Result<(), FlushError> {
        match target {
            FlushTarget::Rest { api_id, stage } => self
                .rest
                .flush_stage_authorizers_cache()
                .rest_api_id(api_id)
                .stage_name(stage)
                .send()
                .await
                .map(drop)
                .map_err(|e| flush_error(target, e)),
            FlushTarget::Http { api_id, stage } => self
                .http
                .reset_authorizers_cache()
                .api_id(api_id)
                .stage_name(stage)
                .send()
                .await
                .map(drop)
                .map_err(|e| flush_error(target, e)),
        }
    }
}

/// Flushes every target, retrying transient failures (4 attempts, 100 ms doubling). Every target is
/// tried even when one fails; the first failure is returned so the notice is redelivered.
pub async fn flush_all<F: CacheFlusher>(flusher: &F, targets: &[FlushTarget]) -> Result<usize, FlushError> {
    let mut first_failure = None;
    let mut flushed = 0;
    for target in targets {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        let result = loop {
            match flusher.flush(target).await {
                Err(FlushError::Transient { .. }) if attempt < 4 => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(%target, "authorizer cache flushed");
                flushed += 1;
            }
            Err(err) => {
                tracing::error!(error = %err, "authorizer cache flush failed");
                first_failure.get_or_insert(err);
            }
        }
    }
    first_failure.map_or(Ok(flushed), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_targets("rest:a1b2c3/prod, http:x9y8/$default").unwrap(),
            vec![
                FlushTarget::Rest { api_id: "a1b2c3".into(), stage: "prod".into() },
                FlushTarget::Http { api_id: "x9y8".into(), stage: "$default".into() },
            ]
        );
        for bad in ["rest:a1b2c3", "grpc:a/b", "rest:/prod", "rest:a/b/c"] {
            assert!(bad.parse::<FlushTarget>().is_err(), "{bad}");
        }
    }
}
