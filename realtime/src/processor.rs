//! The realtime usage processor: one CloudWatch Logs delivery in, counters updated exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meter_model::{ApplyReport, BatchId, Clock, StoreError, UsageWriter};
use meter_store::RetryPolicy;

use crate::decode::{self, DecodeError, MessageType};
use crate::lines::{self, LineStats};
use crate::metrics::{MetricLine, Unit};

/// Why a delivery was not processed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The payload cannot be decoded; retrying cannot help (Firehose keeps the data).
    #[error("undecodable payload")]
    Undecodable(#[from] DecodeError),
    /// The store refused the batch on every attempt; Lambda should retry the delivery later.
    #[error("could not apply batch {batch_id} after {attempts} attempt(s)")]
    Store {
        /// The batch.
        batch_id: BatchId,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: StoreError,
    },
}

impl ProcessError {
    /// Whether redelivering the same event may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store { .. })
    }
}

/// What one delivery did.
#[derive(Debug, Clone, Default)]
pub struct ProcessReport {
    /// The batch (none for a control message).
    pub batch_id: Option<BatchId>,
    /// What the lines were.
    pub lines: LineStats,
    /// Rejected lines by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Usage events of keys that do not exist (counted as rejected, never creating items).
    pub unknown_key_events: u64,
    /// Keys whose counters changed.
    pub keys_touched: u64,
    /// What the store did.
    pub apply: ApplyReport,
    /// Store attempts made.
    pub attempts: u32,
    /// Time spent.
    pub duration: Duration,
}

impl ProcessReport {
    /// The invocation's metrics as one EMF line.
    #[must_use]
    pub fn metrics(&self, function: &str, at: chrono::DateTime<chrono::Utc>) -> MetricLine {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        MetricLine::new(function, at)
            .with("EventsRead", self.lines.log_events, Unit::Count)
            .with("UsageEvents", self.lines.usage_events, Unit::Count)
            .with("SkippedLines", self.lines.skipped, Unit::Count)
            .with("RejectedLines", self.lines.rejected, Unit::Count)
            .with("DroppedMethod", self.lines.dropped_method, Unit::Count)
            .with("DroppedResource", self.lines.dropped_resource, Unit::Count)
            .with("DroppedLatencyMs", self.lines.dropped_latency_ms, Unit::Count)
            .with("UnknownKeyEvents", self.unknown_key_events, Unit::Count)
            .with("Rejected", self.lines.rejected + self.unknown_key_events, Unit::Count)
            .with("DuplicateEvents", self.lines.duplicates, Unit::Count)
            .with("KeysTouched", self.keys_touched, Unit::Count)
            .with("ItemsWritten", count(self.apply.items_written), Unit::Count)
            .with("DuplicateBatches", u64::from(self.apply.was_duplicate()), Unit::Count)
            .with("ChunksAlreadyApplied", count(self.apply.chunks_already_applied), Unit::Count)
            .with(
                "Duration",
                u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
                Unit::Milliseconds,
            )
    }
}

/// The processor, generic over the store and the clock.
#[derive(Debug)]
pub struct UsageProcessor<S, C> {
    store: S,
    clock: C,
    retry: RetryPolicy,
}

impl<S: UsageWriter, C: Clock> UsageProcessor<S, C> {
    /// A processor writing to `store`.
    pub fn new(store: S, clock: C, retry: RetryPolicy) -> Self {
        Self { store, clock, retry }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Processes a Lambda subscription event, `{"awslogs":{"data":"…"}}`.
    pub async fn process_event(&self, event_json: &[u8]) -> Result<ProcessReport, ProcessError> {
        let compressed = decode::subscription_data(event_json)?;
        self.process_compressed(&compressed).await
    }

    /// Processes a gzip CloudWatch Logs payload.
    pub async fn process_compressed(&self, compressed: &[u8]) -> Result<ProcessReport, ProcessError> {
        let started = Instant::now();
        let inflated = decode::gunzip(compressed)?;
        let mut repaired = None;
        let payload = decode::parse_payload_repairing(&inflated, &mut repaired)?;
        if payload.message_type == MessageType::Control {
            return Ok(ProcessReport { duration: started.elapsed(), ..ProcessReport::default() });
        }
        let aggregated = lines::aggregate(&payload);
        let batch = aggregated.delta;
        let mut report = ProcessReport {
            batch_id: Some(batch.batch_id().clone()),
            lines: aggregated.stats,
            rejected_by_reason: aggregated.rejected_by_reason,
            ..ProcessReport::default()
        };
        if !batch.is_empty() {
            let mut attempts = 1;
            let applied = self
                .retry
                .run(
                    || self.store.apply_batch(&batch, self.clock.now()),
                    StoreError::is_transient,
                    |err, pause| {
                        tracing::warn!(batch_id = %batch.batch_id(), attempt = attempts, ?pause, error = %err, "retrying batch");
                        attempts += 1;
                    },
                )
                .await;
            report.attempts = attempts;
            report.apply = applied.map_err(|source| ProcessError::Store {
                batch_id: batch.batch_id().clone(),
                attempts,
                source,
            })?;
        }
        report.unknown_key_events = report.apply.unknown_keys.values().map(|t| t.usage_count).sum();
        if !report.apply.was_duplicate() {
            let keys = batch.by_key().count().saturating_sub(report.apply.unknown_keys.len());
            report.keys_touched = u64::try_from(keys).unwrap_or(u64::MAX);
        }
        if !report.apply.unknown_keys.is_empty() {
            tracing::warn!(
                batch_id = %batch.batch_id(),
                unknown_keys = report.apply.unknown_keys.len(),
                events = report.unknown_key_events,
                "usage for unknown keys counted as rejected"
            );
        }
        report.duration = started.elapsed();
        Ok(report)
    }
}
