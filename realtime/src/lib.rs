//! The realtime stage (CONTRACTS.md §3–§5, §8): decoding CloudWatch Logs subscription payloads, the
//! Firehose transformer that feeds the archive and, from the same buffer, the realtime counters (each
//! delivery counted once), Firehose's buffering for local runs, and the local archiver behind
//! `meter archive`.

pub mod alerts;
pub mod archiver;
pub mod buffer;
pub mod counters;
pub mod decode;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod lines;
pub mod local;
pub use meter_lambda::metrics;
pub mod transform;
pub mod usage_line;

pub use archiver::{ArchiveSummary, Archiver};
pub use buffer::{BufferCutter, Buffering};
pub use counters::{CounterReport, RealtimeCounters};
pub use decode::DecodeError;
pub use local::{LocalRealtime, ReadRecord, RealtimeTotals};
pub use meter_lambda::RetryPolicy;

/// Splits a file of Lambda events into its events: one JSON document, or several one after another
/// (JSON lines, or simply concatenated). Returns each event's raw text.
pub fn split_events(text: &str) -> Result<Vec<&serde_json::value::RawValue>, serde_json::Error> {
    serde_json::Deserializer::from_str(text).into_iter::<&serde_json::value::RawValue>().collect()
}
