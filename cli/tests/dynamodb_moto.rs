//! The `meter` key and usage commands against DynamoDB in moto, configured only through the standard
//! AWS settings, as an operator would. Fails (does not skip) without the emulator.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::process::Command;

use serde_json::Value;

fn meter(store: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meter"));
    command.envs(meter_testkit::aws_env()).env_remove("AWS_PROFILE").env("METER_STORE", store);
    command
}

fn ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn keys_lifecycle_on_dynamodb() {
    let suffix = std::process::id();
    let store = format!("dynamodb:keys=CliKeys-{suffix},counters=CliUsage-{suffix}");

    let before_init = meter(&store).args(["keys", "list"]).output().unwrap();
    assert_eq!(before_init.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&before_init.stderr).contains("meter store init"));

    let init = ok(meter(&store).args(["store", "init"]));
    assert!(init.contains(&format!("CliKeys-{suffix}")), "{init}");
    assert!(ok(meter(&store).args(["store", "init"])).contains("nothing to create"));

    let created: Value = serde_json::from_str(&ok(meter(&store).args([
        "keys",
        "create",
        "--email",
        "ada@example.com",
        "--json",
    ])))
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let listed: Value = serde_json::from_str(&ok(meter(&store).args(["keys", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id);

    assert!(ok(meter(&store).args(["keys", "revoke", id])).contains("epoch 1"));
    let shown: Value = serde_json::from_str(&ok(meter(&store).args(["keys", "show", id, "--json"]))).unwrap();
    assert_eq!(shown["status"], "revoked");
    let usage: Value =
        serde_json::from_str(&ok(meter(&store).args(["usage", "show", id, "--json"]))).unwrap();
    assert_eq!(usage["usageCount"], 0);
}

#[test]
fn archive_to_s3() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bucket = runtime.block_on(meter_testkit::fresh_bucket());
    let event = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../realtime/tests/fixtures/subscription-event.json");
    let out = ok(meter("sqlite:/nonexistent/unused.db").args([
        "--archive",
        &format!("s3://{bucket}/usage"),
        "archive",
        event.to_str().unwrap(),
    ]));
    assert!(out.contains(&format!("s3://{bucket}/usage")), "{out}");
    let listed = runtime
        .block_on(meter_testkit::s3_client().list_objects_v2().bucket(&bucket).prefix("usage/year=").send())
        .unwrap();
    assert_eq!(listed.contents().len(), 2);
}
