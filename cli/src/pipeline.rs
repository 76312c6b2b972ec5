//! `meter realtime` and `meter archive`: the two CloudWatch Logs subscriptions, run over files of
//! Lambda events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use meter_model::{ArchiveWriter, Clock, UsageWriter};
use meter_realtime::lines::LineStats;
use meter_realtime::{Archiver, ProcessError, RetryPolicy, UsageProcessor, archiver, split_events};

/// Reads an input: a file, or standard input for `-`.
pub(crate) fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn events_of<'t>(path: &Path, text: &'t str) -> anyhow::Result<Vec<&'t serde_json::value::RawValue>> {
    split_events(text).with_context(|| format!("{} is not a sequence of JSON Lambda events", path.display()))
}

#[derive(Default)]
struct RealtimeTotals {
    deliveries: u64,
    duplicates: u64,
    partly_applied_before: u64,
    lines: LineStats,
    rejected_by_reason: BTreeMap<String, u64>,
    unknown_key_events: u64,
    items_written: usize,
    undecodable: Vec<String>,
}

pub(crate) async fn realtime<S: UsageWriter, C: Clock>(
    store: S,
    clock: C,
    store_name: &str,
    files: &[std::path::PathBuf],
) -> anyhow::Result<String> {
    let processor = UsageProcessor::new(store, clock, RetryPolicy::default());
    let mut totals = RealtimeTotals::default();
    for path in files {
        let text = read_input(path)?;
        for (index, event) in events_of(path, &text)?.into_iter().enumerate() {
            totals.deliveries += 1;
            match processor.process_event(event.get().as_bytes()).await {
                Ok(report) => {
                    totals.duplicates += u64::from(report.apply.was_duplicate());
                    totals.partly_applied_before +=
                        u64::from(!report.apply.was_duplicate() && report.apply.chunks_already_applied > 0);
                    totals.lines.add(report.lines);
                    for (reason, n) in report.rejected_by_reason {
                        *totals.rejected_by_reason.entry(reason).or_insert(0) += n;
                    }
                    totals.unknown_key_events += report.unknown_key_events;
                    totals.items_written += report.apply.items_written;
                }
                Err(ProcessError::Undecodable(err)) => {
                    totals.undecodable.push(format!("{} event {}: {err}", path.display(), index + 1));
                }
                Err(err) => {
                    return Err(anyhow::Error::from(err)).with_context(|| {
                        format!(
                            "stopped at {} event {}; deliveries before it were applied, and running the same \
                             files again is safe (applied batches are skipped)",
                            path.display(),
                            index + 1
                        )
                    });
                }
            }
        }
    }
    // Only what was applied is counted as applied; undecodable deliveries are listed below.
    let applied = totals.deliveries - totals.undecodable.len() as u64;
    let mut out = format!(
        "Applied {applied} of {} deliveries to {store_name} ({} already applied before, {} partly).\n",
        totals.deliveries, totals.duplicates, totals.partly_applied_before
    );
    write_lines(&mut out, &totals.lines, &totals.rejected_by_reason);
    let _ = writeln!(
        out,
        "  unknown-key events {:>12}  (counted as rejected; no items created)",
        totals.unknown_key_events
    );
    let _ = writeln!(out, "  items written      {:>12}", totals.items_written);
    fail_on_undecodable(out, &totals.undecodable)
}

fn write_lines(out: &mut String, lines: &LineStats, rejected_by_reason: &BTreeMap<String, u64>) {
    let reasons: Vec<String> = rejected_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(out, "  log events         {:>12}", lines.log_events);
    let _ = writeln!(out, "  usage events       {:>12}", lines.usage_events);
    let _ = writeln!(
        out,
        "  repeated requests  {:>12}  (same requestId within a delivery, counted once)",
        lines.duplicates
    );
    let _ = writeln!(out, "  other log lines    {:>12}", lines.skipped);
    let _ = writeln!(
        out,
        "  rejected lines     {:>12}{}",
        lines.rejected,
        if reasons.is_empty() { String::new() } else { format!("  ({})", reasons.join(", ")) }
    );
    if lines.dropped_fields() > 0 {
        let dropped: Vec<String> = [
            ("method", lines.dropped_method),
            ("resource", lines.dropped_resource),
            ("latencyMs", lines.dropped_latency_ms),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(field, n)| format!("{field} {n}"))
        .collect();
        let _ = writeln!(
            out,
            "  dropped fields     {:>12}  ({}; invalid optional fields left out, the calls counted)",
            lines.dropped_fields(),
            dropped.join(", ")
        );
    }
}

fn fail_on_undecodable(out: String, undecodable: &[String]) -> anyhow::Result<String> {
    if undecodable.is_empty() {
        return Ok(out);
    }
    print!("{out}");
    bail!(
        "{} deliveries could not be decoded and were not applied:\n  {}",
        undecodable.len(),
        undecodable.join("\n  ")
    )
}

pub(crate) async fn archive<A: ArchiveWriter>(
    archive: A,
    archive_name: &str,
    files: &[std::path::PathBuf],
) -> anyhow::Result<String> {
    let mut archiver = Archiver::new(archive, archiver::DEFAULT_ROWS_PER_FILE);
    for path in files {
        let text = read_input(path)?;
        for (index, event) in events_of(path, &text)?.into_iter().enumerate() {
            let origin = format!("{} event {}", path.display(), index + 1);
            archiver
                .add_event(event.get().as_bytes(), &origin)
                .await
                .with_context(|| format!("cannot archive {origin}"))?;
        }
    }
    let summary = archiver.finish().await.context("cannot write the archive")?;
    let mut out = format!(
        "Archived {} deliveries into {archive_name} ({} control messages).\n",
        summary.deliveries, summary.control_messages
    );
    write_lines(&mut out, &summary.lines, &BTreeMap::new());
    let _ = writeln!(out, "  rejects kept       {:>12}  (under rejects/)", summary.rejects_kept);
    for (day, events) in &summary.events_per_day {
        let _ = writeln!(out, "  {day}         {events:>12} events");
    }
    let _ = writeln!(out, "  files written      {:>12}", summary.files.len());
    fail_on_undecodable(out, &summary.undecodable)
}
