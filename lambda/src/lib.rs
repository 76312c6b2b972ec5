//! What every Lambda binary of meter shares, and nothing that stores anything: the runtime loop,
//! the logging set-up and the failure type handed to the runtime ([`runtime`], behind the `runtime`
//! feature), the environment reader that names the variable at fault ([`env`]), the CloudWatch
//! Embedded Metric Format lines ([`metrics`]) and the one retry policy ([`retry`]).
//!
//! The metrics and the retry policy are also what the libraries use when they run outside Lambda
//! (`meter` on a laptop, `meter serve`), so this crate builds without the runtime; the adapters of
//! the ports (`meter-store`) build on its retry policy, never the other way round.

pub mod env;
pub mod metrics;

/// Log targets held to `error` whatever the filter says, in the Lambda binaries and in `meter`
/// alike: the S3 SDK warns on every GET of an object Firehose uploaded in parts ("a part-level
/// checksum which can't be validated"), which nobody can act on; the object is read all the same.
pub const QUIET_LOG_TARGETS: [&str; 1] = ["aws_sdk_s3::http_response_checksum=error"];
pub mod retry;
#[cfg(feature = "runtime")]
pub mod runtime;

pub use retry::RetryPolicy;
