//! The realtime stage (CONTRACTS.md §3–§3.5, §4): decoding CloudWatch Logs subscription payloads, the usage
//! processor that keeps the counters exactly once per delivered batch, the Firehose transformer that
//! feeds the archive, and the local archiver behind `meter archive`.

pub mod archiver;
pub mod decode;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod lines;
pub mod metrics;
pub mod processor;
pub mod transform;
pub mod usage_line;

pub use archiver::{ArchiveSummary, Archiver};
pub use decode::DecodeError;
pub use meter_store::RetryPolicy;
pub use processor::{ProcessError, ProcessReport, UsageProcessor};

/// Splits a file of Lambda events into its events: one JSON document, or several one after another
/// (JSON lines, or simply concatenated). Returns each event's raw text.
pub fn split_events(text: &str) -> Result<Vec<&serde_json::value::RawValue>, serde_json::Error> {
    serde_json::Deserializer::from_str(text).into_iter::<&serde_json::value::RawValue>().collect()
}
