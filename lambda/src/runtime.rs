//! The edge every Lambda binary of the project shares: structured logs, and errors handed to the
//! runtime with a stable type that says whether trying again may help.
//!
//! Lambda reports a failed invocation as `{"errorType": …, "errorMessage": …}`. The type is one of
//! [`RETRYABLE`] and [`PERMANENT`], so alarms and operators can tell a throttled store from a bad event
//! without reading messages; the message is the whole error chain (never a key or a payload).

use std::error::Error;
use std::future::Future;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use meter_model::error_chain;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `errorType` of a failure that may pass if the invocation is tried again (a throttled or briefly
/// unreachable store, a transient AWS error).
pub const RETRYABLE: &str = "Meter.Retryable";
/// `errorType` of a failure that will recur on the same input (a bad event, a misconfiguration, data
/// that breaks the contract): fix the cause, then invoke again.
pub const PERMANENT: &str = "Meter.Permanent";

/// Structured logs for a Lambda binary: JSON to stdout (CloudWatch Logs), no timestamp (CloudWatch
/// adds one), filtered by `METER_LOG` (default `info`).
pub fn init_logging() {
    let spec = std::env::var("METER_LOG").ok();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(spec.as_deref()))
        .without_time()
        .with_target(false)
        .init();
}

/// The log filter of `METER_LOG` (default `info`), with the Lambda runtime held to `info` whatever it
/// says: at `debug` and `trace` the runtime logs every event whole, and an authorizer's event holds
/// the API key, a processor's the usage lines.
fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let filter = spec
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    ["lambda_runtime=info", "lambda_runtime_api_client=info"]
        .into_iter()
        .chain(crate::QUIET_LOG_TARGETS)
        .filter_map(|directive| directive.parse().ok())
        .fold(filter, tracing_subscriber::EnvFilter::add_directive)
}

/// Why an invocation failed, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// [`RETRYABLE`], [`PERMANENT`], or a type API Gateway itself reads (`Unauthorized`).
    pub error_type: &'static str,
    /// What went wrong: the error and its sources, joined by `: `.
    pub message: String,
}

impl Failure {
    /// A failure of `err`, retryable or not.
    #[must_use]
    pub fn new(err: &(dyn Error + 'static), retryable: bool) -> Self {
        Self { error_type: if retryable { RETRYABLE } else { PERMANENT }, message: error_chain(err) }
    }

    /// A failure that trying again may cure.
    #[must_use]
    pub fn retryable(err: &(dyn Error + 'static)) -> Self {
        Self::new(err, true)
    }

    /// A failure that will recur on the same input.
    #[must_use]
    pub fn permanent(err: &(dyn Error + 'static)) -> Self {
        Self::new(err, false)
    }
}

impl From<Failure> for Diagnostic {
    fn from(failure: Failure) -> Self {
        Self { error_type: failure.error_type.to_owned(), error_message: failure.message }
    }
}

/// A function that cannot start (its configuration is wrong): logged with its whole chain, at ERROR
/// because an operator must act, and handed to the runtime, which reports an initialization error.
pub fn cannot_start(err: impl Error + Send + Sync + 'static) -> lambda_runtime::Error {
    tracing::error!(error = %error_chain(&err), "cannot start");
    Box::new(err)
}

/// Serves invocations with `handler` until the runtime stops: each event's payload in, its answer or
/// a [`Failure`] out.
pub async fn serve<E, R, F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize,
    F: Fn(E) -> Fut,
    Fut: Future<Output = Result<R, Failure>>,
{
    serve_with_deadline(|event, _| handler(event)).await
}

/// [`serve`] for a handler that must finish in time: each event's payload comes with the instant the
/// invocation must have answered by (Lambda's deadline, as a monotonic instant of this process).
pub async fn serve_with_deadline<E, R, F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize,
    F: Fn(E, tokio::time::Instant) -> Fut,
    Fut: Future<Output = Result<R, Failure>>,
{
    // Boxed: the handler's future nests the store's, and the runtime's service stack around it would
    // otherwise make a type too deep for the compiler to lay out. One allocation per invocation.
    lambda_runtime::run(service_fn(|event: LambdaEvent<E>| {
        let deadline = deadline_of(event.context.deadline(), std::time::SystemTime::now());
        Box::pin(handler(event.payload, deadline))
    }))
    .await
}

/// Lambda's deadline (wall-clock time) as an instant of the monotonic clock, taken `now`; a deadline
/// already past is now. A runtime that gives none (an emulator's zero) leaves the longest time a
/// function may run, 15 minutes.
fn deadline_of(deadline: std::time::SystemTime, now: std::time::SystemTime) -> tokio::time::Instant {
    let remaining = if deadline == std::time::SystemTime::UNIX_EPOCH {
        std::time::Duration::from_secs(15 * 60)
    } else {
        deadline.duration_since(now).unwrap_or_default()
    };
    tokio::time::Instant::now() + remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_as_far_ahead_as_lambda_says_and_never_behind() {
        let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let before = tokio::time::Instant::now();
        let ahead = deadline_of(now + std::time::Duration::from_secs(300), now);
        assert!(ahead >= before + std::time::Duration::from_secs(300));
        assert!(ahead <= tokio::time::Instant::now() + std::time::Duration::from_secs(300));
        let past = deadline_of(now - std::time::Duration::from_secs(1), now);
        assert!(past <= tokio::time::Instant::now(), "a deadline gone by is now");
        let unset = deadline_of(std::time::SystemTime::UNIX_EPOCH, now);
        assert!(unset >= before + std::time::Duration::from_secs(899), "none given: Lambda's longest");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write s3://b/k")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_runtime_never_logs_events_whatever_meter_log_says() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for spec in ["trace", "lambda_runtime=trace", "debug,lambda_runtime=trace"] {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(log_filter(Some(spec)))
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "lambda_runtime", "event payload mk_secret");
                tracing::trace!(target: "meter_authorizer", "own trace");
                tracing::warn!(target: "aws_sdk_s3::http_response_checksum", "part-level checksum");
            });
            let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert!(!logged.contains("mk_secret"), "{spec}: {logged}");
            assert!(!logged.contains("part-level checksum"), "{spec}: {logged}");
            if spec == "trace" {
                assert!(logged.contains("own trace"), "{spec}: {logged}");
            }
        }
    }

    #[test]
    fn failures_carry_a_stable_type_and_the_whole_chain() {
        let err = Outer(std::io::Error::other("throttled"));
        let diagnostic = Diagnostic::from(Failure::retryable(&err));
        assert_eq!(diagnostic.error_type, "Meter.Retryable");
        assert_eq!(diagnostic.error_message, "cannot write s3://b/k: throttled");
        assert_eq!(Diagnostic::from(Failure::permanent(&err)).error_type, "Meter.Permanent");
    }
}
