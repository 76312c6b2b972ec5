//! `meter replay-failed`: what Firehose gave up on (its `processing-failed/` error output) fed back
//! through the transformer's path, so that no usage is left only there. Each record is the original
//! CloudWatch Logs delivery: the archive names its files after their content and the counters mark
//! each delivery, so replaying twice, or a record whose first attempt was counted, counts it once.

use std::fmt::Write as _;
use std::io::Read as _;

use anyhow::Context;
use base64::Engine as _;
use meter_model::{ArchiveWriter, Clock, ObjectSource, UsageWriter};
use meter_realtime::{Archiver, Buffering, LocalRealtime, RealtimeCounters, RetryPolicy, archiver};
use serde::Deserialize;

/// One line of Firehose's error output for a failed data transformation (the documented fields the
/// replay needs; the others are kept in the object).
#[derive(Deserialize)]
struct FailedRecord {
    #[serde(rename = "rawData")]
    raw_data: String,
    #[serde(rename = "errorCode", alias = "ErrorCode", default)]
    error_code: Option<String>,
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Replay {
    objects: u64,
    records: u64,
    deliveries_counted: usize,
    deliveries_counted_before: usize,
    usage_events: u64,
    archive_files: usize,
    /// Records that still cannot be decoded, by origin: they stay where they are.
    still_failing: Vec<String>,
}

/// The records of one error object: JSON lines, gzip-compressed or not.
fn records_of(name: &str, bytes: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut text = String::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_string(&mut text)
            .with_context(|| format!("{name} is gzip but does not inflate to text"))?;
    } else {
        text = String::from_utf8(bytes.to_vec()).with_context(|| format!("{name} is not text"))?;
    }
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let origin = format!("{name} line {}", index + 1);
        let record: FailedRecord = serde_json::from_str(line)
            .with_context(|| format!("{origin} is not a Firehose error record (no rawData)"))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(record.raw_data.trim())
            .with_context(|| format!("{origin}: rawData is not base64"))?;
        let origin = match record.error_code {
            Some(code) => format!("{origin} ({code})"),
            None => origin,
        };
        records.push((origin, data));
    }
    Ok(records)
}

/// Replays every error object under `source` into `archive` and `store`. Every object is read and
/// checked before anything is written: a malformed object stops the replay with nothing done.
pub(crate) async fn replay_failed<O, A, S, C>(
    source: &O,
    source_name: &str,
    archive: A,
    store: S,
    clock: C,
    json: bool,
) -> anyhow::Result<String>
where
    O: ObjectSource,
    A: ArchiveWriter,
    S: UsageWriter,
    C: Clock,
{
    let names = source.list("").await.with_context(|| format!("cannot list {source_name}"))?;
    let mut records = Vec::new();
    for name in &names {
        let bytes = source.get(name).await.with_context(|| format!("cannot read {name}"))?;
        records.extend(records_of(name, &bytes)?);
    }
    let mut replay =
        Replay { objects: names.len() as u64, records: records.len() as u64, ..Replay::default() };
    let counters = RealtimeCounters::new(store, clock, RetryPolicy::default());
    let mut realtime = LocalRealtime::new(counters, Buffering::DEPLOYED);
    let mut archiver = Archiver::new(archive, archiver::DEFAULT_ROWS_PER_FILE);
    for (origin, data) in &records {
        archiver.add_compressed(data, origin).await.with_context(|| format!("cannot archive {origin}"))?;
        realtime.add_record(data, None, origin).await;
    }
    let summary = archiver.finish().await.context("cannot write the archive")?;
    let totals = realtime.finish().await;
    let apply = &totals.counters.apply;
    replay.deliveries_counted = apply.deliveries_applied;
    replay.deliveries_counted_before = apply.deliveries_already_applied;
    replay.usage_events = summary.lines.usage_events;
    replay.archive_files = summary.files.len();
    replay.still_failing = summary.undecodable.clone();
    if let Some(failure) = &apply.failure {
        anyhow::bail!(
            "the records are archived, but the counters could not be updated ({} calls not applied): {failure}\n  \
             the nightly reconcile restores their counts from the archive",
            apply.not_applied.usage_count
        );
    }
    let out = if json {
        serde_json::to_string(&replay)? + "\n"
    } else {
        let mut out = format!(
            "Replayed {} records of {} error objects in {source_name}: {} usage events archived in {} files; \
             {} deliveries counted, {} counted before (not again).\n",
            replay.records,
            replay.objects,
            replay.usage_events,
            replay.archive_files,
            replay.deliveries_counted,
            replay.deliveries_counted_before
        );
        if replay.records > 0 {
            let _ = writeln!(
                out,
                "  Once the invoices of their month are issued, replayed usage shows as an adjustment on the next ones."
            );
        }
        out
    };
    if !replay.still_failing.is_empty() {
        anyhow::bail!(
            "{out}{} records still cannot be decoded; they are left in place:\n  {}",
            replay.still_failing.len(),
            replay.still_failing.join("\n  ")
        );
    }
    Ok(out)
}
