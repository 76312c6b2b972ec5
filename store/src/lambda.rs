//! What every Lambda binary of the project sets up the same way.

/// Structured logs for a Lambda binary: JSON to stdout (CloudWatch Logs), no timestamp (CloudWatch
/// adds one), filtered by `METER_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("METER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).without_time().with_target(false).init();
}
