//! The Firehose data transformation (CONTRACTS.md §5): each record, a gzip CloudWatch Logs payload,
//! becomes newline-delimited JSON rows with the archive's column names, partitioned by UTC day.
//! Rejected usage lines are kept under `rejects/`; undecodable records go to Firehose's error output.
//!
//! The event and response shapes are Firehose's (`recordId`, `result`, `data`, `metadata.partitionKeys`);
//! they are declared here rather than taken from a crate so that the payload's size cap applies before
//! anything is decoded.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use meter_archive::format::{self, encode_json_rows};
use meter_model::{ArchiveWriter, BatchDelta, Clock, Day, RejectedLine, StoreError, UsageEvent, UsageWriter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::counters::{CounterReport, RealtimeCounters};
use crate::decode::{self, MessageType};
use crate::lines::{self, LineStats};
use meter_lambda::metrics::{MetricLine, Unit};

/// A Firehose transformation invocation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirehoseEvent {
    /// The invocation's id.
    #[serde(default)]
    pub invocation_id: String,
    /// The records to transform.
    pub records: Vec<FirehoseRecord>,
}

/// One input record.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirehoseRecord {
    /// Must be answered exactly once.
    pub record_id: String,
    /// Base64 of the gzip CloudWatch Logs payload.
    pub data: String,
}

/// The answer to Firehose.
#[derive(Debug, Serialize)]
pub struct FirehoseResponse {
    /// One per input record, same ids.
    pub records: Vec<TransformedRecord>,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RecordResult {
    /// Holds usage events.
    Ok,
    /// Holds none (control message, only other log lines, only rejects).
    Dropped,
    /// Cannot be decoded; Firehose keeps it in its error output.
    ProcessingFailed,
}

/// One output record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformedRecord {
    /// The input record's id.
    pub record_id: String,
    /// The outcome.
    pub result: RecordResult,
    /// Base64 of the NDJSON rows (the input data when not `Ok`).
    pub data: String,
    /// The partition, for `Ok` records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RecordMetadata>,
}

/// Dynamic partitioning keys.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordMetadata {
    /// `year`, `month`, `day`: the day most of the record's usage events fall on.
    pub partition_keys: BTreeMap<&'static str, String>,
}

/// What one invocation did.
#[derive(Debug, Clone, Default)]
pub struct TransformStats {
    /// Records answered `Ok`.
    pub ok: u64,
    /// Records answered `Dropped`.
    pub dropped: u64,
    /// Records answered `ProcessingFailed`.
    pub failed: u64,
    /// Lines over all records.
    pub lines: LineStats,
    /// Reject files written.
    pub reject_files: u64,
    /// `Ok` records whose rows would have pushed the response past [`RESPONSE_BUDGET_BYTES`]: their
    /// events were written to the archive by the transformer itself and the records answered
    /// `Dropped`, so no row is lost to Lambda's 6 MB response limit.
    pub archived_directly: u64,
    /// Bytes of the whole response as it is serialized (record ids, results, data, partition keys).
    pub response_bytes: u64,
    /// What the invocation did to the realtime counters.
    pub counters: CounterReport,
    /// The time of the invocation's oldest usage event: its lag is how late the counters show usage.
    pub oldest_event: Option<chrono::DateTime<chrono::Utc>>,
}

impl TransformStats {
    /// The invocation's metrics as one EMF line.
    #[must_use]
    pub fn metrics(&self, function: &str, at: chrono::DateTime<chrono::Utc>) -> MetricLine {
        let line = MetricLine::new(function, at)
            .with("RecordsOk", self.ok, Unit::Count)
            .with("RecordsDropped", self.dropped, Unit::Count)
            .with("RecordsFailed", self.failed, Unit::Count)
            .with("UsageEvents", self.lines.usage_events, Unit::Count)
            .with("RejectedLines", self.lines.rejected, Unit::Count)
            .with("DroppedMethod", self.lines.dropped_method, Unit::Count)
            .with("DroppedResource", self.lines.dropped_resource, Unit::Count)
            .with("DroppedLatencyMs", self.lines.dropped_latency_ms, Unit::Count)
            .with("DuplicateEvents", self.lines.duplicates, Unit::Count)
            .with("RecordsArchivedDirectly", self.archived_directly, Unit::Count)
            .with("ResponseBytes", self.response_bytes, Unit::Bytes);
        // From the request to its counter update: the design's "visible within 60 s", measured.
        let line = match self.oldest_event {
            Some(oldest) => {
                let lag = u64::try_from((at - oldest).num_milliseconds()).unwrap_or(0);
                line.with("RealtimeLagMs", lag, Unit::Milliseconds)
            }
            None => line,
        };
        self.counters.metrics(line)
    }
}

/// Lambda's cap on a synchronous response: the whole JSON answer, record ids and metadata included.
pub const LAMBDA_RESPONSE_LIMIT_BYTES: u64 = 6_291_456;

/// The most the transformer's serialized response may weigh: Lambda's cap less 291,456 bytes (4.6%)
/// kept spare. Every byte is counted (record ids, results, partition keys, JSON punctuation), not only
/// the rows.
pub const RESPONSE_BUDGET_BYTES: u64 = 6_000_000;

/// `{"records":[` and `]}` around the answers.
const RESPONSE_ENVELOPE_BYTES: u64 = r#"{"records":[]}"#.len() as u64;

/// Transforms one invocation: every record answered for the archive, rejects kept, and the usage of
/// all its records applied to the realtime counters in one buffer (CONTRACTS.md §8). Fails only when
/// rejects (or rows that did not fit the response) cannot be kept, so that Firehose retries the
/// invocation instead of losing them; a failing counter store never fails it (see
/// [`RealtimeCounters::apply`]).
pub async fn transform<A: ArchiveWriter, S: UsageWriter, C: Clock>(
    event: &FirehoseEvent,
    archive: &A,
    counters: &RealtimeCounters<S, C>,
) -> Result<(FirehoseResponse, TransformStats), StoreError> {
    transform_within(event, archive, counters, RESPONSE_BUDGET_BYTES, None).await
}

/// [`transform`] as the deployed function runs it: the counters are given up at `counters_deadline`
/// (reported as not applied, restored by reconcile), so that the archive answer always goes back
/// before Lambda's own deadline, whatever DynamoDB does.
pub async fn transform_before<A: ArchiveWriter, S: UsageWriter, C: Clock>(
    event: &FirehoseEvent,
    archive: &A,
    counters: &RealtimeCounters<S, C>,
    counters_deadline: tokio::time::Instant,
) -> Result<(FirehoseResponse, TransformStats), StoreError> {
    transform_within(event, archive, counters, RESPONSE_BUDGET_BYTES, Some(counters_deadline)).await
}

/// [`transform`] with a response budget of `budget` bytes of serialized response, and the counters
/// given up at `counters_deadline` when there is one. Rows that do not fit are written to the archive
/// directly, one Parquet file per day named after the invocation's records (a retried invocation
/// rewrites the same file), and their records answered `Dropped`.
///
/// The budget holds by construction: every record is first counted at its smallest answer (`Dropped`
/// without data, or `ProcessingFailed` with its own data, each no larger than the record in the
/// request), and an `Ok` answer replaces it only if the difference fits. The smallest answers
/// together are smaller than the request, which Firehose keeps under its buffer size (3 MB) and
/// Lambda under 6 MB.
pub async fn transform_within<A: ArchiveWriter, S: UsageWriter, C: Clock>(
    event: &FirehoseEvent,
    archive: &A,
    counters: &RealtimeCounters<S, C>,
    budget: u64,
    counters_deadline: Option<tokio::time::Instant>,
) -> Result<(FirehoseResponse, TransformStats), StoreError> {
    let mut stats = TransformStats::default();
    let mut outcomes = Vec::with_capacity(event.records.len());
    for record in &event.records {
        outcomes.push(transform_record(record, archive, &mut stats).await?);
    }
    let mut records: Vec<TransformedRecord> = event
        .records
        .iter()
        .zip(&outcomes)
        .map(|(record, outcome)| match outcome {
            Outcome::Failed => record.answer(RecordResult::ProcessingFailed, record.data.clone(), None),
            Outcome::Rows(..) | Outcome::Dropped => record.answer(RecordResult::Dropped, String::new(), None),
        })
        .collect();
    let commas = u64::try_from(records.len().saturating_sub(1)).unwrap_or(u64::MAX);
    stats.response_bytes = records.iter().map(serialized_len).sum::<u64>() + RESPONSE_ENVELOPE_BYTES + commas;
    if stats.response_bytes > budget {
        // Cannot happen with Firehose's buffers (see above); said rather than assumed.
        tracing::error!(
            bytes = stats.response_bytes,
            budget,
            "the smallest answer to this invocation exceeds the response budget; Lambda will refuse it"
        );
    }
    let mut deliveries = Vec::with_capacity(event.records.len());
    let mut overflow: BTreeMap<Day, Vec<UsageEvent<'static>>> = BTreeMap::new();
    for ((record, answer), outcome) in event.records.iter().zip(records.iter_mut()).zip(outcomes) {
        match outcome {
            Outcome::Rows(rows, day, delta, events) => {
                deliveries.push(delta);
                let oldest = events.iter().map(|event| event.timestamp).min();
                stats.oldest_event = stats.oldest_event.into_iter().chain(oldest).min();
                let ok = record.answer(RecordResult::Ok, STANDARD.encode(rows), Some(partition_keys(day)));
                let growth = serialized_len(&ok).saturating_sub(serialized_len(answer));
                if stats.response_bytes + growth > budget {
                    stats.archived_directly += 1;
                    for event in events {
                        overflow.entry(Day::of(event.timestamp)).or_default().push(event);
                    }
                } else {
                    stats.ok += 1;
                    stats.response_bytes += growth;
                    *answer = ok;
                }
            }
            // A dropped record needs no data back: Firehose delivers nothing for it.
            Outcome::Dropped => stats.dropped += 1,
            Outcome::Failed => stats.failed += 1,
        }
    }
    if !overflow.is_empty() {
        let mut ids = Sha256::new();
        for record in &event.records {
            ids.update(record.record_id.as_bytes());
            ids.update([0]);
        }
        let name = format!("transformer-{}", &hex::encode(ids.finalize())[..20]);
        for (day, events) in &overflow {
            archive.write_events(*day, &name, events).await?;
        }
    }
    stats.counters = match counters_deadline {
        Some(deadline) => counters.apply_before(&deliveries, deadline).await,
        None => counters.apply(&deliveries).await,
    };
    Ok((FirehoseResponse { records }, stats))
}

impl FirehoseRecord {
    fn answer(
        &self,
        result: RecordResult,
        data: String,
        metadata: Option<RecordMetadata>,
    ) -> TransformedRecord {
        TransformedRecord { record_id: self.record_id.clone(), result, data, metadata }
    }
}

/// The bytes `record` takes in the serialized response.
fn serialized_len(record: &TransformedRecord) -> u64 {
    /// Counts what is written instead of keeping it: an `Ok` answer's rows may be megabytes.
    struct Counted(u64);
    impl std::io::Write for Counted {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counted = Counted(0);
    // Serializing these plain structs cannot fail; were it to, u64::MAX keeps the budget safe.
    serde_json::to_writer(&mut counted, record).map_or(u64::MAX, |()| counted.0)
}

/// What a record turned out to hold.
enum Outcome {
    /// NDJSON rows, the record's partition ([`partition_day`]), its counts, and its events.
    Rows(Vec<u8>, Day, BatchDelta, Vec<UsageEvent<'static>>),
    /// No usage events.
    Dropped,
    /// Undecodable.
    Failed,
}

/// Decodes one record, keeps its rejects, and renders its usage events.
async fn transform_record<A: ArchiveWriter>(
    record: &FirehoseRecord,
    rejects: &A,
    stats: &mut TransformStats,
) -> Result<Outcome, StoreError> {
    let decoded = decode::decode_base64(&record.data).and_then(|gz| decode::gunzip(&gz));
    let inflated = match decoded {
        Ok(inflated) => inflated,
        Err(err) => {
            tracing::warn!(record_id = %record.record_id, error = %err, "record cannot be decoded");
            return Ok(Outcome::Failed);
        }
    };
    let mut repaired = None;
    let payload = match decode::parse_payload_repairing(&inflated, &mut repaired) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::warn!(record_id = %record.record_id, error = %err, "record is not CloudWatch Logs JSON");
            return Ok(Outcome::Failed);
        }
    };
    if payload.message_type == MessageType::Control {
        return Ok(Outcome::Dropped);
    }
    let classified = lines::classify(&payload);
    stats.lines.add(classified.stats);
    if !classified.rejects.is_empty() {
        let name = lines::batch_id(&payload).to_string();
        for (day, day_rejects) in by_day(classified.rejects) {
            rejects.write_rejects(day, &name, &day_rejects).await?;
            stats.reject_files += 1;
        }
    }
    let Some(day) = partition_day(&classified.events) else {
        return Ok(Outcome::Dropped);
    };
    let rows = encode_json_rows(&classified.events)?;
    let delta = lines::delta_of(&payload, &classified.events);
    Ok(Outcome::Rows(rows, day, delta, classified.events))
}

/// The partition of a record whose events are `events`: the UTC day most of them fall on (the
/// earliest of equals). Firehose files a record whole, so this puts the most events in their own
/// day's folder; a delivery spans seconds, so the rest are in a neighbouring one, and the rollup
/// counts any further one on its own day all the same.
fn partition_day(events: &[UsageEvent<'_>]) -> Option<Day> {
    let mut days: Vec<(Day, usize)> = Vec::new();
    for event in events {
        let day = Day::of(event.timestamp);
        match days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => *n += 1,
            None => days.push((day, 1)),
        }
    }
    days.into_iter().max_by(|(a, n), (b, m)| n.cmp(m).then(b.cmp(a))).map(|(day, _)| day)
}

fn by_day(rejects: Vec<RejectedLine>) -> BTreeMap<Day, Vec<RejectedLine>> {
    let mut grouped: BTreeMap<Day, Vec<RejectedLine>> = BTreeMap::new();
    for reject in rejects {
        grouped.entry(Day::of(reject.log_timestamp)).or_default().push(reject);
    }
    grouped
}

fn partition_keys(day: Day) -> RecordMetadata {
    RecordMetadata { partition_keys: BTreeMap::from(format::partition_keys(day)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::DroppedFields;
    use meter_model::time::parse_instant;

    fn event(at: &str) -> UsageEvent<'static> {
        UsageEvent {
            request_id: at.to_owned().into(),
            key_id: "k1".into(),
            timestamp: parse_instant(at).unwrap(),
            status_code: 200,
            should_count: true,
            method: None,
            resource: None,
            latency_ms: None,
            dropped: DroppedFields::NONE,
        }
    }

    #[test]
    fn a_record_goes_to_the_day_most_of_its_events_fall_on_not_its_first_events() {
        let day = |text: &str| text.parse::<Day>().unwrap();
        let events = [
            event("2026-11-30T23:59:58.000Z"),
            event("2026-12-01T00:00:00.100Z"),
            event("2026-12-01T00:00:01.000Z"),
        ];
        assert_eq!(partition_day(&events), Some(day("2026-12-01")));
        // Equal shares: the earlier day.
        assert_eq!(partition_day(&events[..2]), Some(day("2026-11-30")));
        assert_eq!(partition_day(&[]), None);
    }

    #[test]
    fn the_lag_metric_is_that_of_the_oldest_event_and_absent_without_events() {
        let at = parse_instant("2026-11-30T14:01:00.000Z").unwrap();
        let line = |stats: &TransformStats| -> serde_json::Value {
            serde_json::from_str(&stats.metrics("archive-transformer", at).render()).unwrap()
        };
        let mut stats = TransformStats::default();
        assert!(line(&stats).get("RealtimeLagMs").is_none());
        stats.oldest_event = Some(parse_instant("2026-11-30T14:00:12.500Z").unwrap());
        assert_eq!(line(&stats)["RealtimeLagMs"], 47_500);
    }
}
