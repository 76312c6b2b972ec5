//! `meter realtime` and `meter archive`: what the log group's subscription feeds (the transformer's
//! counters, and the archive), run over files of Lambda events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use meter_model::{ArchiveWriter, Clock, UsageWriter};
use meter_realtime::lines::LineStats;
use meter_realtime::{
    Archiver, Buffering, LocalRealtime, RealtimeCounters, RetryPolicy, archiver, split_events,
};

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

pub(crate) async fn realtime<S: UsageWriter, C: Clock>(
    store: S,
    clock: C,
    store_name: &str,
    files: &[std::path::PathBuf],
    json: bool,
) -> anyhow::Result<String> {
    let buffering = Buffering::DEPLOYED;
    let counters = RealtimeCounters::new(store, clock, RetryPolicy::default());
    let mut run = LocalRealtime::new(counters, buffering);
    for path in files {
        let text = read_input(path)?;
        for (index, event) in events_of(path, &text)?.into_iter().enumerate() {
            let origin = format!("{} event {}", path.display(), index + 1);
            run.add_event(event.get().as_bytes(), None, &origin).await;
        }
    }
    let totals = run.finish().await;
    let apply = &totals.counters.apply;
    if let Some(failure) = &apply.failure {
        bail!(
            "the counters could not be updated ({} calls not applied): {failure}\n  deliveries that were marked \
             are not applied again by a second run; the nightly reconcile restores their counts",
            apply.not_applied.usage_count
        );
    }
    let out = if json {
        serde_json::json!({
            "deliveries": totals.deliveries,
            "usageEvents": totals.lines.usage_events,
            "invocations": totals.invocations,
            "writeUnits": apply.write_units(),
            "readUnits": apply.read_units(),
            "itemsWritten": apply.items_written(),
            "duplicateDeliveries": apply.deliveries_already_applied,
            "unknownKeyEvents": totals.counters.unknown_key_events(),
            "rejectedLines": totals.lines.rejected,
            "firehoseBilledBytes": totals.billed_record_bytes,
            "buffering": { "maxBytes": buffering.max_bytes, "maxSeconds": buffering.max_age.num_seconds() },
        })
        .to_string()
            + "\n"
    } else {
        let mut out = format!(
            "Applied {} deliveries to {store_name} in {} transformer invocations ({} delivered before, not counted again).\n",
            apply.deliveries_applied, totals.invocations, apply.deliveries_already_applied
        );
        write_lines(&mut out, &totals.lines, &totals.rejected_by_reason);
        let _ = writeln!(
            out,
            "  unknown-key events {:>12}  (counted as rejected; no items created)",
            totals.counters.unknown_key_events()
        );
        let _ = writeln!(out, "  items written      {:>12}", apply.items_written());
        let _ = writeln!(
            out,
            "  DynamoDB units     {:>12}  write, {} read (what the deployed design consumes for these deliveries, \
             buffered {} bytes / {} s)",
            apply.write_units(),
            apply.read_units(),
            buffering.max_bytes,
            buffering.max_age.num_seconds()
        );
        out
    };
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
