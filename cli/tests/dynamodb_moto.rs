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

/// Creates a key for ada@example.com; the `--json` answer.
fn create_key(store: &str) -> Value {
    serde_json::from_str(&ok(meter(store).args(["keys", "create", "--email", "ada@example.com", "--json"])))
        .unwrap()
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

    let created = create_key(&store);
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

#[test]
fn revoke_publishes_a_notice_that_an_sqs_subscriber_receives() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (topic, queue) = runtime.block_on(meter_testkit::topic_with_queue());
    let suffix = std::process::id();
    let store = format!("dynamodb:keys=RevKeys-{suffix},counters=RevUsage-{suffix}");
    ok(meter(&store).args(["store", "init"]));
    let created = create_key(&store);
    let (id, key) = (created["id"].as_str().unwrap(), created["key"].as_str().unwrap());

    let allowed = meter(&store).args(["authorize", key]).output().unwrap();
    assert_eq!(allowed.status.code(), Some(0), "{}", String::from_utf8_lossy(&allowed.stderr));
    ok(meter(&store).env("METER_REVOCATION_TOPIC", &topic).args(["keys", "revoke", id]));
    let denied = meter(&store).args(["authorize", key]).output().unwrap();
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).contains("revoked key"));

    let messages = runtime.block_on(meter_testkit::receive_all(&queue));
    assert_eq!(messages.len(), 1, "{messages:?}");
    // SNS wraps the notice in its envelope; the notice names the key and never holds its secret.
    let envelope: Value = serde_json::from_str(&messages[0]).unwrap();
    let notice: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(notice["type"], "KEY_REVOKED");
    assert_eq!(notice["keyId"], id);
    assert_eq!(notice["epoch"], 1);
    assert!(!messages[0].contains(&key[16..]));
}
