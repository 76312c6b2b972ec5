//! `meter demo` and `meter simulate` end to end: the invoices equal the ground truth exactly under
//! faults, the realtime counters did drift before reconcile, and the same seed gives the same files.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::process::Command;

fn meter(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meter"));
    command
        .env("METER_HOME", home)
        .env_remove("METER_STORE")
        .env_remove("METER_LOG")
        .env_remove("METER_ARCHIVE");
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
        // A seed whose default faults lose a delivery: at their 1% rate, about half the seeds lose
        // none of this small month's ~70 deliveries.
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
fn simulate_writes_what_each_subscription_receives_and_the_truth() {
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
            "--lost-rate",
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
    let day = "2026-11-15.json";
    let archive = std::fs::read_to_string(out.join("archive").join(day)).unwrap();
    let realtime = std::fs::read_to_string(out.join("realtime").join(day)).unwrap_or_default();
    assert!(archive.lines().count() >= 1 && archive.starts_with("{\"awslogs\""));
    assert!(realtime.len() <= archive.len() * 2);
    // The files are what `meter archive` and `meter realtime` read.
    let archived = meter(home.path())
        .args(["archive", out.join("archive").join(day).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(archived.status.success(), "{}", String::from_utf8_lossy(&archived.stderr));
    let bad = meter(home.path())
        .args(["simulate", "--out", out.to_str().unwrap(), "--lost-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a rate above 1 is bad usage");
}
