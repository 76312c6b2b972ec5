//! `meter rollup --engine athena` and `meter reconcile --engine athena` against Athena and S3 in moto:
//! the query (the rollup SQL with its four parameters) goes to the workgroup, the command waits for
//! it, reads the result file from S3, and gives the same rollup, drift and orphans as the local engine.
//! moto runs no SQL, so the result is canned: the local rollup of the same archive, as Athena writes it.
//! That the SQL itself computes those numbers is the parity test's job (notebooks/test_notebooks.py).
//! Fails (does not skip) without the emulator.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn meter(home: &Path) -> Command {
    // After October 2026, whose archive these tests reconcile.
    let mut command = common::meter_at("2026-11-02T07:00:00Z");
    command.envs(meter_testkit::aws_env()).env_remove("AWS_PROFILE").env("METER_HOME", home);
    command
}

fn ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap()
}

/// A CSV file as Athena's result for moto: every row (the header first) as `Data` values.
fn as_athena_result(csv: &str) -> Value {
    let rows: Vec<Value> = csv
        .lines()
        .map(|line| json!({"Data": line.split(',').map(|v| json!({"VarCharValue": v})).collect::<Vec<_>>()}))
        .collect();
    json!({"rows": rows, "column_info": []})
}

#[test]
fn rollup_and_reconcile_on_athena_match_the_local_engine() {
    let home = tempfile::tempdir().unwrap();
    let archive = home.path().join("archive");
    ok(meter(home.path()).args(["gen-archive", "--out"]).arg(&archive).args([
        "--events",
        "4000",
        "--keys",
        "25",
        "--month",
        "2026-10",
        "--files-per-day",
        "2",
    ]));
    let range = ["--from", "2026-10-01", "--to", "2026-10-31"];
    let local = home.path().join("local.csv");
    ok(meter(home.path()).arg("rollup").arg("--archive").arg(&archive).args(range).arg("--out").arg(&local));
    let local = std::fs::read_to_string(&local).unwrap();
    assert!(local.lines().count() > 300, "{local}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bucket = runtime.block_on(meter_testkit::fresh_bucket());
    let athena = aws_sdk_athena::Client::new(&meter_testkit::sdk_config_for(&meter_testkit::endpoint()));
    let workgroup = meter_testkit::unique("meter-test");
    runtime.block_on(athena.create_work_group().name(&workgroup).send()).unwrap();
    runtime.block_on(meter_testkit::queue_athena_results(json!([
        as_athena_result(&local),
        as_athena_result(&local)
    ])));
    let athena_flags = [
        "--engine",
        "athena",
        "--athena-workgroup",
        &workgroup,
        "--athena-database",
        "meter_test",
        "--athena-output",
        &format!("s3://{bucket}/results/"),
    ];

    let from_athena = home.path().join("athena.csv");
    let said = ok(meter(home.path())
        .arg("rollup")
        .arg("--archive")
        .arg(&archive)
        .args(range)
        .args(athena_flags)
        .arg("--out")
        .arg(&from_athena));
    assert!(said.contains("scanned by athena"), "{said}");
    assert_eq!(std::fs::read_to_string(&from_athena).unwrap(), local, "the same rollup through Athena");

    // The query Athena received: the rollup SQL, its four parameters, in the workgroup and database.
    let ids = runtime.block_on(athena.list_query_executions().work_group(&workgroup).send()).unwrap();
    let id = ids.query_execution_ids().last().unwrap().clone();
    let execution = runtime
        .block_on(athena.get_query_execution().query_execution_id(id).send())
        .unwrap()
        .query_execution
        .unwrap();
    assert_eq!(execution.query(), Some(meter_archive::ROLLUP_SQL));
    assert_eq!(execution.execution_parameters(), ["20260930", "20261101", "'2026-10-01'", "'2026-10-31'"]);
    assert_eq!(execution.query_execution_context().unwrap().database(), Some("meter_test"));

    // Reconcile with the Athena rollup: no key is known to this store, so every call is orphan usage,
    // exactly as many as the local rollup counted.
    let usage: u64 =
        local.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap()).sum();
    let said = ok(meter(home.path())
        .arg("reconcile")
        .arg("--archive")
        .arg(&archive)
        .args(range)
        .arg("--dry-run")
        .args(athena_flags));
    assert!(said.contains(&format!("orphan usage: {usage} events of 25 unknown keys")), "{said}");
    assert!(said.contains("scanned by athena"), "{said}");
}

#[test]
fn athena_without_its_workgroup_is_bad_usage() {
    let home = tempfile::tempdir().unwrap();
    let output = meter(home.path())
        .args(["rollup", "--from", "2026-10-01", "--to", "2026-10-31", "--engine", "athena"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--athena-workgroup"));
}
