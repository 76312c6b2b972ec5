//! The `meter` key and usage commands against DynamoDB in moto, configured only through the standard
//! AWS settings, as an operator would. Fails (does not skip) without the emulator.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use std::process::Command;

use serde_json::Value;

fn meter(store: &str) -> Command {
    // The usage these tests write is of November 2026; the commands run the day after.
    let mut command = common::meter_at("2026-12-01T09:00:00Z");
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

/// A team's existing key table (the seed's `ApiKeys` schema) imported into meter's DynamoDB store;
/// its keys then authorize through the hashed-key index, and a rotation schedules the flush of API
/// Gateway's cache for the end of its grace period.
#[test]
fn keys_import_from_a_dynamodb_table_then_rotation_schedules_the_grace_end() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, KeySchemaElement, KeyType, ScalarAttributeType,
    };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let suffix = std::process::id();
    let store = format!("dynamodb:keys=ImpKeys-{suffix},counters=ImpUsage-{suffix}");
    ok(meter(&store).args(["store", "init"]));
    let source = format!("LegacyApiKeys-{suffix}");
    let dynamodb = meter_testkit::dynamodb_client();
    runtime
        .block_on(
            dynamodb
                .create_table()
                .table_name(&source)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("id")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .unwrap(),
                )
                .key_schema(
                    KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap(),
                )
                .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
                .send(),
        )
        .unwrap();
    let legacy = [
        ("u-1001", "sk_live_first_legacy_key_1", "active", "42"),
        ("u-1002", "sk_live_second_legacy_key2", "revoked", "7"),
    ];
    for (id, key, status, calls) in legacy {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        runtime
            .block_on(
                dynamodb
                    .put_item()
                    .table_name(&source)
                    .item("id", s(id))
                    .item("hashedKey", s(meter_model::HashedKey::of(key).as_str()))
                    .item("userEmail", s("Legacy@Example.com"))
                    .item("status", s(status))
                    .item("usageCount", AttributeValue::N(calls.into()))
                    .item("successfulCalls", AttributeValue::N(calls.into()))
                    .item("failedCalls", AttributeValue::N("0".into()))
                    .item("lastUsed", s("2026-11-01T12:00:00Z"))
                    .item("createdBy", s("the old system"))
                    .send(),
            )
            .unwrap();
    }
    let import = || -> Value {
        serde_json::from_str(&ok(meter(&store).args([
            "keys",
            "import",
            "--from-dynamodb",
            &source,
            "--json",
        ])))
        .unwrap()
    };
    let imported = import();
    assert_eq!(imported["created"], serde_json::json!(["u-1001", "u-1002"]));
    assert_eq!(imported["ignoredFields"], serde_json::json!(["createdBy"]));
    let again = import();
    assert_eq!((again["created"].as_array().unwrap().len(), again["unchanged"].as_u64()), (0, Some(2)));

    let allowed = meter(&store).args(["authorize", "sk_live_first_legacy_key_1"]).output().unwrap();
    assert_eq!(allowed.status.code(), Some(0), "{}", String::from_utf8_lossy(&allowed.stderr));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("u-1001 of legacy@example.com"));
    assert_eq!(
        meter(&store).args(["authorize", "sk_live_second_legacy_key2"]).output().unwrap().status.code(),
        Some(1)
    );

    // A rotation on AWS: refused without the workflow that flushes API Gateway's cache at the grace end …
    let (topic, _queue) = runtime.block_on(meter_testkit::topic_with_queue());
    let without = meter(&store)
        .env("METER_REVOCATION_TOPIC", &topic)
        .args(["keys", "rotate", "u-1001"])
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without.stderr).contains("--grace-end-state-machine"));
    // … and with it, an execution waits for the grace end and then publishes to the revocation topic.
    let sfn = aws_sdk_sfn::Client::new(&meter_testkit::sdk_config_for(&meter_testkit::endpoint()));
    let definition =
        r#"{"StartAt":"Wait","States":{"Wait":{"Type":"Wait","TimestampPath":"$.graceEndsAt","End":true}}}"#;
    let machine = runtime
        .block_on(
            sfn.create_state_machine()
                .name(meter_testkit::unique("grace-end"))
                .definition(definition)
                .role_arn("arn:aws:iam::123456789012:role/meter-test-grace-end")
                .send(),
        )
        .unwrap()
        .state_machine_arn;
    let rotated: Value =
        serde_json::from_str(&ok(meter(&store).env("METER_REVOCATION_TOPIC", &topic).args([
            "keys",
            "rotate",
            "u-1001",
            "--grace",
            "1h",
            "--grace-end-state-machine",
            &machine,
            "--json",
        ])))
        .unwrap();
    let executions = runtime.block_on(sfn.list_executions().state_machine_arn(&machine).send()).unwrap();
    assert_eq!(executions.executions().len(), 1);
    let execution = runtime
        .block_on(sfn.describe_execution().execution_arn(executions.executions()[0].execution_arn()).send())
        .unwrap();
    let input: Value = serde_json::from_str(execution.input().unwrap()).unwrap();
    assert_eq!(input["keyId"], "u-1001");
    assert_eq!(input["graceEndsAt"], rotated["graceEndsAt"]);
    let new = rotated["id"].as_str().unwrap();
    let shown: Value =
        serde_json::from_str(&ok(meter(&store).args(["keys", "show", new, "--json"]))).unwrap();
    assert_eq!(shown["userEmail"], "legacy@example.com");
}
