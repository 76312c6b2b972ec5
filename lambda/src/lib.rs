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
pub mod retry;
#[cfg(feature = "runtime")]
pub mod runtime;

pub use retry::RetryPolicy;
