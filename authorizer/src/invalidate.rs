//! The revocation invalidator: on each revocation notice, flush API Gateway's authorizer result cache
//! for the configured stages (`FlushStageAuthorizersCache` for REST APIs, `ResetAuthorizersCache` for
//! HTTP APIs), so that not even API Gateway's own cache serves a revoked key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use meter_lambda::RetryPolicy;

#[cfg(feature = "lambda")]
pub use crate::api_gateway::ApiGatewayFlusher;

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

/// How long after a revocation a warm authorizer may still answer Allow from its own cache: it
/// re-reads the epoch at most once a second (plus time for an answer already on its way).
pub const EPOCH_WINDOW: Duration = Duration::from_secs(2);

/// Flushes every target now and again once [`EPOCH_WINDOW`] has passed. API Gateway may cache an Allow
/// that a warm authorizer gives in the second before it sees the new epoch; a single flush, run
/// before that second is over, would leave such an Allow cached for the stage's whole TTL. After the
/// second flush no authorizer can answer Allow for the revoked key, so nothing stale is cached.
pub async fn flush_now_and_after_epoch_window<F: CacheFlusher>(
    flusher: &F,
    targets: &[FlushTarget],
) -> Result<usize, FlushError> {
    let first = flush_all(flusher, targets).await;
    tokio::time::sleep(EPOCH_WINDOW).await;
    let second = flush_all(flusher, targets).await;
    first.and(second)
}

/// How a flush is retried: 4 attempts, 100 ms doubling (with jitter) to 800 ms.
pub const FLUSH_RETRY: RetryPolicy =
    RetryPolicy::new(4, Duration::from_millis(100), Duration::from_millis(800));

/// Flushes every target, retrying transient failures ([`FLUSH_RETRY`]). Every target is tried even
/// when one fails; the first failure is returned so the notice is redelivered.
pub async fn flush_all<F: CacheFlusher>(flusher: &F, targets: &[FlushTarget]) -> Result<usize, FlushError> {
    let mut first_failure = None;
    let mut flushed = 0;
    for target in targets {
        let result = FLUSH_RETRY
            .run(
                || flusher.flush(target),
                |err| matches!(err, FlushError::Transient { .. }),
                |err, pause| tracing::warn!(%target, ?pause, error = %err, "retrying a cache flush"),
            )
            .await;
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

#[cfg(test)]
mod window_tests {
    use std::sync::Mutex;

    use super::*;

    /// Records when each target was flushed (tokio's paused clock).
    #[derive(Default)]
    struct Recording(Mutex<Vec<(String, tokio::time::Instant)>>);

    impl CacheFlusher for Recording {
        async fn flush(&self, target: &FlushTarget) -> Result<(), FlushError> {
            self.0.lock().unwrap().push((target.to_string(), tokio::time::Instant::now()));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_target_is_flushed_again_after_the_epoch_window() {
        let targets = parse_targets("rest:a1/prod,http:b2/$default").unwrap();
        let recording = Recording::default();
        let started = tokio::time::Instant::now();
        flush_now_and_after_epoch_window(&recording, &targets).await.unwrap();
        let flushes = recording.0.into_inner().unwrap();
        assert_eq!(flushes.len(), 4);
        for (target, at) in &flushes[..2] {
            assert_eq!(*at, started, "{target}: flushed at once");
        }
        for (target, at) in &flushes[2..] {
            assert!(*at - started >= EPOCH_WINDOW, "{target}: flushed again after the window");
        }
    }
}
