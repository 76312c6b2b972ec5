//! `meter demo` and `meter simulate` end to end: the invoices equal the ground truth exactly under
//! faults, the realtime counters did drift before reconcile, and the same seed gives the same files.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use std::path::Path;
use std::process::Command;

use rust_decimal::Decimal;

fn meter(home: &Path) -> Command {
    // The demo runs its month on a clock of its own; the instant says only when the run "is".
    let mut command = common::meter_at("2026-12-02T10:00:00Z");
    command.env("METER_HOME", home);
    command
}

fn demo(home: &Path, faults: &str, seed: &str) -> String {
    let output = meter(home)
        .args(["demo", "--events", "20000", "--keys", "40", "--faults", faults, "--seed", seed])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The number after `label` in the summary.
fn number_after(text: &str, label: &str) -> u64 {
    let rest = &text[text.find(label).unwrap_or_else(|| panic!("no {label:?} in {text}")) + label.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn invoices_equal_the_ground_truth_under_default_and_heavy_faults() {
    for faults in ["default", "heavy"] {
        let home = tempfile::tempdir().unwrap();
        // At the default 1% rate, the counter store is down for a few hundred of this month's
        // invocations: the counters drift, and reconcile heals them.
        let out = demo(home.path(), faults, "4");
        assert!(out.contains("OK: the invoices match the ground truth exactly"), "{out}");
        assert!(
            number_after(&out, "drift before reconcile:") > 0,
            "the faults made the counters drift: {out}"
        );
        assert_eq!(number_after(&out, "drift left:"), 0, "{out}");
        assert!(out.contains("per million API calls"), "{out}");
        assert!(home.path().join("demo/reports/issued/month=2026-11/invoices.csv").is_file());
    }
}

fn issued(home: &Path) -> std::path::PathBuf {
    home.join("demo/reports/issued/month=2026-11")
}

#[test]
fn the_same_seed_gives_the_same_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    demo(a.path(), "heavy", "11");
    demo(b.path(), "heavy", "11");
    for name in [
        "invoices.csv",
        "invoices.parquet",
        "invoice_lines.csv",
        "invoice_lines.parquet",
        "usage_daily.parquet",
    ] {
        assert_eq!(
            std::fs::read(issued(a.path()).join(name)).unwrap(),
            std::fs::read(issued(b.path()).join(name)).unwrap(),
            "{name}"
        );
    }
    // The manifests differ only in where the archive was.
    let manifest = |home: &Path| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(issued(home).join("manifest.json")).unwrap()).unwrap();
        value["source"]["archive"] = serde_json::Value::Null;
        value
    };
    assert_eq!(manifest(a.path()), manifest(b.path()));
    // Another seed, other traffic.
    let c = tempfile::tempdir().unwrap();
    demo(c.path(), "heavy", "12");
    assert_ne!(
        std::fs::read(issued(a.path()).join("invoices.csv")).unwrap(),
        std::fs::read(issued(c.path()).join("invoices.csv")).unwrap()
    );
}

#[test]
fn simulate_writes_what_the_subscription_delivers_and_the_truth() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("sim");
    let output = meter(home.path())
        .args([
            "simulate",
            "--out",
            out.to_str().unwrap(),
            "--events",
            "5000",
            "--keys",
            "10",
            "--redeliver-rate",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let truth = std::fs::read_to_string(out.join("truth.csv")).unwrap();
    assert!(
        truth.starts_with("key_id,day,successful_calls,failed_calls,usage_count\n")
            && truth.lines().count() > 10
    );
    let day = out.join("deliveries").join("2026-11-15.json");
    let deliveries = std::fs::read_to_string(&day).unwrap();
    assert!(deliveries.lines().count() > 100 && deliveries.starts_with("{\"awslogs\""));
    // The files are what `meter archive` and `meter realtime` read; half the deliveries arrive twice
    // and are counted once.
    let archived = meter(home.path()).args(["archive", day.to_str().unwrap()]).output().unwrap();
    assert!(archived.status.success(), "{}", String::from_utf8_lossy(&archived.stderr));
    let realtime = meter(home.path()).args(["realtime", "--json", day.to_str().unwrap()]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&realtime.stdout).unwrap();
    assert!(json["duplicateDeliveries"].as_u64().unwrap() > 10, "{json}");
    for bad in [
        &["--store-down-rate", "2"][..],
        &["--traffic", "huge"],
        &["--hours", "2"],
        &["--traffic", "small", "--events", "9"],
    ] {
        let output =
            meter(home.path()).args(["simulate", "--out", out.to_str().unwrap()]).args(bad).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?} is bad usage");
    }
}

#[test]
fn a_reference_traffic_is_priced_from_what_the_pipeline_did() {
    let home = tempfile::tempdir().unwrap();
    let output = meter(home.path())
        .args(["demo", "--traffic", "medium", "--hours", "0.1", "--faults", "none"])
        .output()
        .unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("medium traffic (115 req/s, 20 log streams, 5000 keys) for 0.1 h"), "{out}");
    assert!(out.contains("OK: the invoices match the ground truth exactly"), "{out}");
    assert_eq!(number_after(&out, "drift before reconcile:"), 0, "no faults, no drift: {out}");
    assert!(out.contains("buffered through Firehose (adopted)") && out.contains("today: direct"), "{out}");
}

/// `--json` gives the figures `scripts/bench-day` prints: the day's cost against what was counted,
/// each stage measured, and the reconcile memory the stack would deploy for such a day.
#[test]
fn a_day_s_figures_come_as_one_json_object() {
    let home = tempfile::tempdir().unwrap();
    let output = meter(home.path())
        .args(["demo", "--traffic", "medium", "--hours", "0.1", "--faults", "none", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let day: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(day["exact"], true, "{day}");
    let calls = day["calls"].as_u64().unwrap();
    assert!(calls > 40_000, "{day}");
    let money = |field: &str| day[field].as_str().unwrap().parse::<Decimal>().unwrap();
    let (cost, per_million) = (money("cost"), money("costPerMillion"));
    // The cost comes to the micro-dollar and the figure per million to 4 places: both roundings bound
    // how far apart they may be.
    let millions_of_calls = Decimal::from(calls) / Decimal::from(1_000_000);
    let tolerance = Decimal::new(5, 7) / millions_of_calls + Decimal::new(5, 5);
    assert!((cost / millions_of_calls - per_million).abs() <= tolerance, "{day}");
    // 115 req/s is about 9.9 M events a day: (100 MiB + 240 B each) twice over, rounded up to 64 MiB.
    let events = calls * 1440 / 6;
    assert_eq!(day["busiestDayEvents"], events, "{day}");
    let memory = ((100 + (events * 240).div_ceil(1 << 20)) * 2).div_ceil(64) * 64;
    assert!((4_500..5_000).contains(&memory), "{memory}");
    assert_eq!(
        (day["reconcileEngine"].as_str(), day["deployedReconcileMemoryMiB"].as_u64()),
        (Some("local"), Some(memory))
    );
    for stage in [&day["pipeline"]["figures"], &day["reconcile"], &day["report"]] {
        assert!(stage["wallSeconds"].as_f64().unwrap() >= 0.0, "{day}");
        if cfg!(target_os = "linux") {
            assert!(stage["peakMiB"].as_u64().unwrap() > 1, "{day}");
            assert!(stage["userSeconds"].as_f64().is_some(), "{day}");
        }
    }
    assert!(
        day["reconcile"]["readUnits"].as_u64().unwrap() > 0
            && day["dynamodb"]["writeUnits"].as_u64().unwrap() > 0
    );
}
