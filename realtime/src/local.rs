//! The realtime path run locally (`meter realtime`, `meter demo`): deliveries are cut into Firehose
//! invocations by the deployed [`Buffering`], and each invocation's deliveries are applied to the
//! counters as the transformer applies them, so that the counts (invocations, write and read units)
//! are what the deployed design would do for the same traffic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use meter_model::{BatchDelta, BatchId, Clock, UsageWriter};

use crate::buffer::{BufferCutter, Buffering};
use crate::counters::{CounterReport, RealtimeCounters};
use crate::decode::{self, LogsPayload, MessageType};
use crate::lines::{self, LineStats};

/// What a local run did, in the deployed design's terms.
#[derive(Debug, Clone, Default)]
pub struct RealtimeTotals {
    /// Deliveries read (Firehose records).
    pub deliveries: u64,
    /// Control messages among them.
    pub control_messages: u64,
    /// Deliveries that could not be decoded, with why.
    pub undecodable: Vec<String>,
    /// What the lines were.
    pub lines: LineStats,
    /// Rejected lines by reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Transformer invocations.
    pub invocations: u64,
    /// Bytes of the records (gzip payloads) and the bytes Firehose bills for them (5 KB increments).
    pub record_bytes: u64,
    /// See `record_bytes`.
    pub billed_record_bytes: u64,
    /// Largest invocation, in record bytes and in usage events.
    pub largest_invocation_bytes: u64,
    /// See `largest_invocation_bytes`.
    pub largest_invocation_events: u64,
    /// Distinct keys summed over deliveries, and (key, day) pairs summed over deliveries: what a
    /// design that writes per delivery would write.
    pub delivery_keys: u64,
    /// See `delivery_keys`.
    pub delivery_key_days: u64,
    /// Keys not seen in an earlier delivery: what a per-delivery design that remembers known keys reads.
    pub first_seen_keys: u64,
    /// What the counters did, over all invocations.
    pub counters: CounterReport,
}

/// One Firehose record read once, for a local run's counters and archive alike: the deployed
/// transformer, too, reads each record once for both.
#[derive(Debug)]
pub struct ReadRecord {
    /// Bytes of the record (its gzip payload).
    pub bytes: u64,
    /// Its usage; `Ok(None)` for a control message; why it cannot be read.
    pub content: Result<Option<RecordContent>, String>,
}

/// What a data message holds.
#[derive(Debug)]
pub struct RecordContent {
    /// Its batch id (what names its archive files).
    pub batch: BatchId,
    /// Its lines: usage events, each request once, and rejects.
    pub classified: lines::Classified,
    /// Its counts per key and day.
    pub delta: BatchDelta,
    /// Its latest valid log event time.
    pub latest: Option<DateTime<Utc>>,
}

impl ReadRecord {
    /// Decodes and classifies a gzip CloudWatch Logs payload.
    #[must_use]
    pub fn read(compressed: &[u8]) -> Self {
        let content = data_message(compressed, |payload| {
            let classified = lines::classify(payload);
            RecordContent {
                batch: lines::batch_id(payload),
                delta: lines::delta_of(payload, &classified.events),
                latest: lines::latest_log_time(payload),
                classified,
            }
        });
        Self { bytes: compressed.len() as u64, content }
    }
}

/// Decodes a gzip CloudWatch Logs payload and reads a data message with `read`: `Ok(None)` for a
/// control message, or why the payload cannot be decoded.
pub(crate) fn data_message<T>(
    compressed: &[u8],
    read: impl FnOnce(&LogsPayload<'_>) -> T,
) -> Result<Option<T>, String> {
    let inflated = decode::gunzip(compressed).map_err(|e| e.to_string())?;
    let mut repaired = None;
    let payload = decode::parse_payload_repairing(&inflated, &mut repaired).map_err(|e| e.to_string())?;
    Ok((payload.message_type != MessageType::Control).then(|| read(&payload)))
}

/// Firehose bills each record in 5 KB increments.
pub const FIREHOSE_RECORD_INCREMENT: u64 = 5 * 1024;

/// A local run of the realtime path.
pub struct LocalRealtime<S, C> {
    counters: RealtimeCounters<S, C>,
    cutter: BufferCutter,
    pending: Vec<BatchDelta>,
    pending_bytes: u64,
    pending_events: u64,
    seen_keys: std::collections::HashSet<meter_model::KeyId>,
    totals: RealtimeTotals,
}

impl<S: UsageWriter, C: Clock> LocalRealtime<S, C> {
    /// A run applying to `counters`, buffered as `buffering`.
    pub fn new(counters: RealtimeCounters<S, C>, buffering: Buffering) -> Self {
        Self {
            counters,
            cutter: BufferCutter::new(buffering),
            pending: Vec::new(),
            pending_bytes: 0,
            pending_events: 0,
            seen_keys: std::collections::HashSet::new(),
            totals: RealtimeTotals::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &RealtimeCounters<S, C> {
        &self.counters
    }

    /// Takes one Lambda subscription event (`{"awslogs":{"data":…}}`), arriving at `arrives_at` (by
    /// default when its latest log event was written). An undecodable one is recorded, not fatal.
    pub async fn add_event(&mut self, event_json: &[u8], arrives_at: Option<DateTime<Utc>>, origin: &str) {
        match decode::subscription_data(event_json) {
            Ok(compressed) => self.add_record(&compressed, arrives_at, origin).await,
            Err(err) => {
                self.totals.deliveries += 1;
                self.totals.undecodable.push(format!("{origin}: {err}"));
            }
        }
    }

    /// Takes one Firehose record: a gzip CloudWatch Logs payload.
    pub async fn add_record(&mut self, compressed: &[u8], arrives_at: Option<DateTime<Utc>>, origin: &str) {
        let bytes = compressed.len() as u64;
        let decoded =
            data_message(compressed, |payload| (lines::aggregate(payload), lines::latest_log_time(payload)));
        let (aggregated, latest) = match decoded {
            Ok(Some(found)) => found,
            Ok(None) => {
                self.totals.control_messages += 1;
                (lines::Aggregated::default(), None)
            }
            Err(err) => {
                self.totals.undecodable.push(format!("{origin}: {err}"));
                (lines::Aggregated::default(), None)
            }
        };
        let at = arrives_at.or(latest).unwrap_or_default();
        for (reason, n) in aggregated.rejected_by_reason {
            *self.totals.rejected_by_reason.entry(reason).or_insert(0) += n;
        }
        self.take(bytes, at, aggregated.stats, aggregated.delta).await;
    }

    /// Takes one Firehose record [read](ReadRecord::read) already (the archive reads the same one),
    /// its counts moved out of `record`.
    pub async fn add_read(
        &mut self,
        record: &mut ReadRecord,
        arrives_at: Option<DateTime<Utc>>,
        origin: &str,
    ) {
        let (stats, delta, latest) = match &mut record.content {
            Ok(Some(content)) => {
                for reject in &content.classified.rejects {
                    *self.totals.rejected_by_reason.entry(reject.reason.clone()).or_insert(0) += 1;
                }
                (content.classified.stats, std::mem::take(&mut content.delta), content.latest)
            }
            Ok(None) => {
                self.totals.control_messages += 1;
                (LineStats::default(), BatchDelta::default(), None)
            }
            Err(err) => {
                self.totals.undecodable.push(format!("{origin}: {err}"));
                (LineStats::default(), BatchDelta::default(), None)
            }
        };
        self.take(record.bytes, arrives_at.or(latest).unwrap_or_default(), stats, delta).await;
    }

    /// A record of `bytes` arriving at `at`, whose lines were `stats` and counts `delta`: into the
    /// buffer, which is handed to the transformer first if Firehose would have cut it before.
    async fn take(&mut self, bytes: u64, at: DateTime<Utc>, stats: LineStats, delta: BatchDelta) {
        self.totals.deliveries += 1;
        self.totals.record_bytes += bytes;
        self.totals.billed_record_bytes +=
            bytes.div_ceil(FIREHOSE_RECORD_INCREMENT) * FIREHOSE_RECORD_INCREMENT;
        if self.cutter.arrives(at, bytes) {
            self.invoke().await;
        }
        self.pending_bytes += bytes;
        self.pending_events += stats.usage_events;
        self.totals.lines.add(stats);
        self.totals.delivery_keys += delta.by_key().count() as u64;
        self.totals.delivery_key_days += delta.days().len() as u64;
        for (key, _) in delta.by_key() {
            if self.seen_keys.insert(key.clone()) {
                self.totals.first_seen_keys += 1;
            }
        }
        if !delta.is_empty() {
            self.pending.push(delta);
        }
    }

    /// Hands the buffer to the transformer now (Firehose's interval ran out).
    pub async fn invoke(&mut self) {
        if self.pending_bytes == 0 {
            return;
        }
        self.totals.invocations += 1;
        self.totals.largest_invocation_bytes = self.totals.largest_invocation_bytes.max(self.pending_bytes);
        self.totals.largest_invocation_events =
            self.totals.largest_invocation_events.max(self.pending_events);
        let report = self.counters.apply(&self.pending).await;
        self.totals.counters.add(report);
        self.pending.clear();
        self.pending_bytes = 0;
        self.pending_events = 0;
    }

    /// What has been done so far (the buffer not yet handed over excluded).
    pub fn totals(&self) -> &RealtimeTotals {
        &self.totals
    }

    /// Hands over what is buffered and returns the totals.
    pub async fn finish(mut self) -> RealtimeTotals {
        self.invoke().await;
        self.totals
    }
}
