//! `meter rollup`, `meter reconcile` and `meter gen-archive`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::UsageError;
use anyhow::{Context, bail};
use meter_archive::{Rollup, encode_rollup_file, rollup_csv};
use meter_model::{Clock, CounterCorrector, Day, KeyStore, Month, Publisher, QueryEngine};
use meter_model::{ObjectSink, ObjectSource};
use meter_reconcile::{ReconcileOptions, RollupEngine, reconcile_with};
use meter_sim::archive::{ArchiveSpec, write_archive};

fn check_range(from: Day, to: Day) -> anyhow::Result<()> {
    if from > to {
        return Err(UsageError(format!("--from {from} is after --to {to}")).into());
    }
    Ok(())
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn throughput<Q: QueryEngine>(engine: &RollupEngine<Q>, rollup: &Rollup, seconds: f64) -> String {
    let stats = &rollup.stats;
    if let RollupEngine::Query(_) = engine {
        return format!(
            "{} {} rows, {} distinct requests, {} MiB scanned by {} in {seconds:.2} s",
            rollup.rows.len(),
            if rollup.rows.len() == 1 { "key-day" } else { "key-days" },
            stats.distinct,
            stats.bytes >> 20,
            engine.name()
        );
    }
    #[allow(clippy::cast_precision_loss, clippy::float_arithmetic)] // a rate for people to read
    let rate = stats.rows as f64 / seconds.max(1e-9);
    let peak = peak_memory().map_or_else(|| "unknown".to_owned(), |b| format!("{} MiB", b >> 20));
    format!(
        "read {} files ({} MiB), {} rows, {} distinct requests, {} duplicates in {seconds:.2} s: \
         {rate:.0} rows/s; peak memory {peak}",
        stats.files,
        stats.bytes >> 20,
        stats.rows,
        stats.distinct,
        stats.duplicates
    )
}

/// Lines about files that held events more than a day from their folder: worth a look, never fatal.
fn misplaced_lines(rollup: &Rollup) -> String {
    let mut out = String::new();
    for file in &rollup.misplaced {
        let _ = writeln!(
            out,
            "warning: {} holds {} event(s) of {}..{}, more than a day from its folder; each is counted \
             on its own day when that day is in the range",
            file.file, file.events, file.days.0, file.days.1
        );
    }
    out
}

pub(crate) async fn rollup_command<A: ObjectSource, Q: QueryEngine>(
    engine: &RollupEngine<Q>,
    archive: &A,
    from: Day,
    to: Day,
    out: Option<&Path>,
) -> anyhow::Result<String> {
    check_range(from, to)?;
    if let Some(path) = out {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(extension, "parquet" | "csv") {
            return Err(UsageError(format!(
                "--out {}: the rollup is written as .parquet or .csv, chosen by the file's extension",
                path.display()
            ))
            .into());
        }
    }
    let started = Instant::now();
    let result = engine.rollup(archive, from, to).await.context("the rollup failed; nothing was written")?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = format!("{}{}", misplaced_lines(&result), throughput(engine, &result, seconds));
    match out {
        Some(path) => {
            let bytes = encode_rollup_file(&path.to_string_lossy(), &result.rows)?;
            write_file(path, &bytes)?;
            Ok(format!(
                "{} rows for {from}..{to} written to {}\n{summary}\n",
                result.rows.len(),
                path.display()
            ))
        }
        None => {
            eprintln!("{summary}");
            Ok(String::from_utf8(rollup_csv(&result.rows)?).context("the CSV is UTF-8")?)
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written aside and renamed, so a reader never sees half a file.
    let staged = path.with_extension("partial");
    std::fs::write(&staged, bytes).with_context(|| format!("cannot write {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Options of `meter reconcile`.
pub(crate) struct ReconcileArgs {
    pub(crate) from: Day,
    pub(crate) to: Day,
    pub(crate) dry_run: bool,
    pub(crate) alert_threshold: Option<u128>,
    pub(crate) engine: RollupEngine,
}

pub(crate) async fn reconcile_command<S, A, P, C>(
    store: &S,
    archive: &A,
    alerts: &P,
    clock: &C,
    args: ReconcileArgs,
) -> anyhow::Result<String>
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
    P: Publisher,
    C: Clock,
{
    check_range(args.from, args.to)?;
    let options = ReconcileOptions {
        from: args.from,
        to: args.to,
        dry_run: args.dry_run,
        alert_threshold: args.alert_threshold,
    };
    let started = Instant::now();
    let rollups = Box::pin(args.engine.rollup(archive, args.from, args.to));
    let report = reconcile_with(store, archive, rollups, alerts, clock, &options).await.context(
        "reconcile stopped; corrections already made are complete and conditional, so running it again is safe",
    )?;
    let run = &report.run;
    let mut out = String::new();
    let verb = if run.dry_run { "would correct" } else { "corrected" };
    let _ =
        writeln!(out, "reconcile {}..{}{}", run.from, run.to, if run.dry_run { " (dry run)" } else { "" });
    let _ = writeln!(out, "  {}", throughput(&args.engine, &report.rollup, started.elapsed().as_secs_f64()));
    for line in misplaced_lines(&report.rollup).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "  checked {} day items of {} keys", run.items_checked, run.keys_checked);
    let _ = writeln!(
        out,
        "  {verb} {} day items of {} keys; total absolute drift {}",
        run.items_corrected, run.keys_corrected, run.total_abs_drift
    );
    if run.conflicts_retried > 0 {
        let _ = writeln!(
            out,
            "  {} corrections re-read after a concurrent realtime write",
            run.conflicts_retried
        );
    }
    for line in report.drift.iter().take(20) {
        let d = line.delta();
        let _ = writeln!(
            out,
            "    {} {}: successful {:+}, failed {:+}, usage {:+}",
            line.key_id, line.day, d.successful_calls, d.failed_calls, d.usage_count
        );
    }
    if report.drift.len() > 20 {
        let _ = writeln!(out, "    … {} more in the drift report", report.drift.len() - 20);
    }
    if run.orphan_events > 0 {
        let keys: std::collections::BTreeSet<&str> =
            report.orphans.iter().map(|o| o.key_id.as_str()).collect();
        let _ = writeln!(
            out,
            "  orphan usage: {} events of {} unknown keys (reported, never counted)",
            run.orphan_events,
            keys.len()
        );
    }
    for file in &report.written {
        let _ = writeln!(out, "  wrote {file}");
    }
    if report.alerted {
        let _ = writeln!(out, "  drift alert published");
    }
    let _ = writeln!(out, "  run {}", run.run_id);
    Ok(out)
}

/// Options of `meter gen-archive`.
pub(crate) struct GenArgs {
    pub(crate) out: PathBuf,
    pub(crate) events: u64,
    pub(crate) keys: u32,
    pub(crate) month: Month,
    pub(crate) files_per_day: u32,
    pub(crate) seed: u64,
}

pub(crate) fn gen_archive(args: GenArgs) -> anyhow::Result<String> {
    if args.keys == 0 || args.files_per_day == 0 {
        bail!("--keys and --files-per-day must be at least 1");
    }
    let days = u32::try_from(args.month.days().count()).unwrap_or(31);
    let spec = ArchiveSpec {
        files_per_day: args.files_per_day,
        ..ArchiveSpec::realistic(args.events, args.keys, args.month.first_day(), days, args.seed)
    };
    let started = Instant::now();
    let generated = write_archive(&args.out, &spec).context("cannot generate the archive")?;
    Ok(format!(
        "wrote {} rows ({} distinct requests, {} keys, {}) in {} files, {} MiB, to {} in {:.1} s\n",
        generated.rows,
        args.events,
        args.keys,
        args.month,
        generated.files,
        generated.bytes >> 20,
        args.out.display(),
        started.elapsed().as_secs_f64()
    ))
}
