//! The `meter` binary as a user drives it: output shapes, exit codes, and that the plain key is shown
//! exactly once and never stored or logged.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use std::path::Path;
use std::process::{Command, Output};

use meter_model::HashedKey;
use serde_json::Value;

/// The instant every command of these tests starts at, unless a test says otherwise: the evening of
/// 30 November 2026, so November is the current month (not over, not issuable) and October is over.
/// The fixtures' usage is dated 30 November and 1 December 2026.
const NOW: &str = "2026-11-30T18:00:00Z";

fn meter(home: &Path) -> Command {
    meter_at(home, NOW)
}

/// `meter` as if started at `now` (RFC 3339), on the embedded default in `home`.
fn meter_at(home: &Path, now: &str) -> Command {
    let mut command = common::meter_at(now);
    command.env("METER_HOME", home);
    command
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn create(home: &Path, email: &str, extra: &[&str]) -> (String, String) {
    create_at(home, NOW, email, extra)
}

fn create_at(home: &Path, now: &str, email: &str, extra: &[&str]) -> (String, String) {
    let out = ok(meter_at(home, now).args(["keys", "create", "--email", email, "--json"]).args(extra));
    let created: Value = serde_json::from_str(&out).unwrap();
    (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned())
}

fn bytes_of_dir(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn create_prints_the_key_once_in_the_documented_shape() {
    let home = tempfile::tempdir().unwrap();
    let (id, key) = create(home.path(), "ada@example.com", &["--plan", "pro", "--name", "checkout"]);
    assert_eq!(id.len(), 12);
    assert!(key.starts_with(&format!("mk_{id}_")) && key.len() == 48, "{key}");

    let shown: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", &id, "--json"]))).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["hashedKey"], HashedKey::of(&key).as_str());
    assert_eq!(shown["userEmail"], "ada@example.com");
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["plan"], "pro");
    assert_eq!(shown["name"], "checkout");
    assert_eq!(shown["usageCount"], 0);

    let text = ok(meter(home.path()).args(["keys", "create", "--email", "bob@example.com"]));
    assert!(text.contains("only time the key is shown"), "{text}");
    assert_eq!(text.matches("mk_").count(), 1, "{text}");
}

#[test]
fn the_plain_key_is_never_stored_listed_or_logged() {
    let home = tempfile::tempdir().unwrap();
    let logged = |args: &[&str]| {
        let output = run(meter(home.path()).env("METER_LOG", "trace").args(args));
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
    };
    let (out, create_log) = logged(&["keys", "create", "--email", "ada@example.com", "--json"]);
    let created: Value = serde_json::from_str(&out).unwrap();
    let (id, key) = (created["id"].as_str().unwrap(), created["key"].as_str().unwrap());
    let secret = &key[16..];
    assert!(create_log.contains(id), "the log should mention the key id: {create_log}");

    let mut seen = vec![create_log];
    for args in [
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["keys", "show", id],
        vec!["keys", "show", id, "--json"],
        vec!["usage", "show", id, "--json"],
        vec!["keys", "revoke", id],
        vec!["keys", "show", id, "--json"],
    ] {
        let (out, log) = logged(&args);
        seen.push(out);
        seen.push(log);
    }
    for text in &seen {
        assert!(!text.contains(secret), "the secret leaked into: {text}");
    }
    let stored = bytes_of_dir(home.path());
    assert!(!stored.is_empty());
    assert!(!contains(&stored, secret), "the secret is in the SQLite files");
    assert!(contains(&stored, HashedKey::of(key).as_str()), "the hash is what is stored");
}

#[test]
fn list_shows_every_key_without_secrets() {
    let home = tempfile::tempdir().unwrap();
    let keys: Vec<_> = ["a@example.com", "b@example.com", "c@example.com"]
        .into_iter()
        .map(|email| create(home.path(), email, &[]))
        .collect();
    let listed: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "list", "--json"]))).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "ordered by id");
    let text = ok(meter(home.path()).args(["keys", "list"]));
    for (id, _) in &keys {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(!text.contains("mk_"), "{text}");
}

#[test]
fn revoke_marks_the_key_and_is_repeatable() {
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    let first = ok(meter(home.path()).args(["keys", "revoke", &id]));
    assert!(first.contains("Revoked key") && first.contains("epoch 1"), "{first}");
    let again = ok(meter(home.path()).args(["keys", "revoke", &id]));
    assert!(again.contains("already revoked"), "{again}");
    let shown: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", &id, "--json"]))).unwrap();
    assert_eq!(shown["status"], "revoked");
    assert!(shown["revokedAt"].is_string());
}

#[test]
fn usage_show_gives_lifetime_and_month_totals() {
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    let lifetime: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["usage", "show", &id, "--json"]))).unwrap();
    assert_eq!(
        lifetime,
        serde_json::json!({"keyId": id, "successfulCalls": 0, "failedCalls": 0, "usageCount": 0, "lastUsed": null})
    );

    // Day items as the realtime processor writes them (its write port arrives with that stage).
    let db = rusqlite::Connection::open(home.path().join("meter.db")).unwrap();
    for (day, n, last) in [
        ("2026-10-31", 100, "2026-10-31T23:59:59.999Z"),
        ("2026-11-01", 3, "2026-11-01T00:00:00.000Z"),
        ("2026-11-30", 4, "2026-11-30T23:59:59.999Z"),
    ] {
        db.execute(
            "INSERT INTO usage_counters (key_id, day, successful_calls, failed_calls, usage_count, last_used) \
             VALUES (?1, ?2, ?3, 1, ?3 + 2, ?4)",
            rusqlite::params![id, day, n, last],
        )
        .unwrap();
    }
    let november: Value = serde_json::from_str(&ok(
        meter(home.path()).args(["usage", "show", &id, "--month", "2026-11", "--json"])
    ))
    .unwrap();
    assert_eq!(november["successfulCalls"], 7);
    assert_eq!(november["failedCalls"], 2);
    assert_eq!(november["usageCount"], 11);
    assert_eq!(november["lastUsed"], "2026-11-30T23:59:59.999Z");
    let text = ok(meter(home.path()).args(["usage", "show", &id, "--month", "2026-11"]));
    assert!(text.contains("billable calls   7"), "{text}");
}

#[test]
fn errors_say_what_is_wrong_with_the_right_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["keys", "create", "--email", "not-an-email"], 2, "not a valid e-mail address"),
        (&["keys", "create", "--email", "a@example.com", "--plan", "no spaces"], 2, "not a valid plan name"),
        (&["keys", "show", "has/slash"], 2, "is not a key id"),
        (&["keys", "show", "zzzzzzzzzzzz"], 1, "no key with id zzzzzzzzzzzz"),
        (&["keys", "revoke", "zzzzzzzzzzzz"], 1, "no key with id zzzzzzzzzzzz"),
        (&["usage", "show", "zzzzzzzzzzzz"], 1, "no key with id zzzzzzzzzzzz"),
        (&["usage", "show", "zzzzzzzzzzzz", "--month", "2026-13"], 2, "not a valid month"),
        (&["--store", "postgres://x", "keys", "list"], 2, "sqlite:PATH"),
        (&["keys", "frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, code, message) in cases {
        let output = run(meter(home.path()).args(*args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unreachable_store_is_a_clear_failure() {
    let home = tempfile::tempdir().unwrap();
    let output = run(meter(home.path())
        .args(["--store", "dynamodb:", "keys", "list"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach DynamoDB"), "{stderr}");

    let file = home.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let output = run(meter(home.path()).args([
        "--store",
        &format!("sqlite:{}/meter.db", file.display()),
        "keys",
        "list",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}

/// The documented example pricing file.
fn example_pricing() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/pricing.example.toml")
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../realtime/tests/fixtures").join(name)
}

#[test]
fn realtime_applies_each_delivery_once_and_reads_stdin() {
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    // The fixture's key ids are fixed; a created key's id is random. Rewrite the fixture for this key.
    let payload =
        std::fs::read_to_string(fixture("cwl-data-payload.json")).unwrap().replace("0123456789ab", &id);
    let event = meter_sim::cloudwatch::encode_subscription_event(payload.as_bytes());
    let file = home.path().join("events.json");
    std::fs::write(&file, format!("{event}\n{event}\n")).unwrap();

    let out = ok(meter(home.path()).args(["realtime", file.to_str().unwrap()]));
    assert!(
        out.contains("Applied 1 deliveries") && out.contains("(1 delivered before, not counted again)"),
        "{out}"
    );
    assert!(out.contains("invalid_statusCode 2"), "lines of both deliveries are read: {out}");
    let usage: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["usage", "show", &id, "--json"]))).unwrap();
    assert_eq!(usage["successfulCalls"], 2);
    assert_eq!(usage["failedCalls"], 2);
    assert_eq!(usage["usageCount"], 5);

    let mut child = meter(home.path())
        .args(["realtime", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), event.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("Applied 0 deliveries"));
    let json: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["realtime", "--json", file.to_str().unwrap()])))
            .unwrap();
    assert_eq!(json["deliveries"], 2);
    assert_eq!(json["usageEvents"], 16);
    assert_eq!(json["invocations"], 1, "both fit one Firehose buffer");
    assert_eq!(json["duplicateDeliveries"], 2, "applied by the first run");
    assert_eq!(json["writeUnits"], 1, "one marker set write; no counter written again");
}

#[test]
fn realtime_reports_undecodable_deliveries_and_fails() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.json");
    std::fs::write(&file, r#"{"awslogs":{"data":"bm90IGd6aXA="}}"#).unwrap();
    let output = run(meter(home.path()).args(["realtime", file.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be decoded") && stderr.contains("bad.json event 1"), "{stderr}");
    // The summary counts what happened: nothing was applied.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Applied 0 deliveries"), "{stdout}");

    std::fs::write(&file, "not json").unwrap();
    let output = run(meter(home.path()).args(["realtime", file.to_str().unwrap()]));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a sequence of JSON Lambda events"));
}

#[test]
fn archive_writes_parquet_by_day_and_keeps_rejects() {
    let home = tempfile::tempdir().unwrap();
    let event = fixture("subscription-event.json");
    let out = ok(meter(home.path()).args(["archive", event.to_str().unwrap()]));
    assert!(out.contains("2026-11-30") && out.contains("2026-12-01"), "{out}");
    let archive = home.path().join("archive");
    let day = |d: &str| std::fs::read_dir(archive.join(d)).map(|r| r.count()).unwrap_or(0);
    assert_eq!(day("year=2026/month=11/day=30"), 1);
    assert_eq!(day("year=2026/month=12/day=01"), 1);
    assert_eq!(day("rejects/year=2026/month=11/day=30"), 1);
    // Archiving the same input again rewrites the same files rather than adding duplicates.
    ok(meter(home.path()).args(["archive", event.to_str().unwrap()]));
    assert_eq!(day("year=2026/month=11/day=30"), 1);

    let elsewhere = home.path().join("other-archive");
    ok(meter(home.path()).args([
        "--archive",
        elsewhere.to_str().unwrap(),
        "archive",
        event.to_str().unwrap(),
    ]));
    assert!(elsewhere.join("year=2026/month=11/day=30").is_dir());
}

#[test]
fn authorize_allows_active_keys_and_denies_the_rest() {
    let home = tempfile::tempdir().unwrap();
    let (id, key) = create(home.path(), "ada@example.com", &["--plan", "pro"]);
    let allowed = ok(meter(home.path()).args(["authorize", &key]));
    assert_eq!(allowed, format!("allow: key {id} of ada@example.com (plan pro)\n"));
    assert!(!allowed.contains(&key[16..]));

    let mut child = meter(home.path())
        .args(["authorize", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{key}\n").as_bytes()).unwrap();
    assert!(child.wait_with_output().unwrap().status.success(), "the key can come from standard input");

    let unknown = meter_model::ApiKey::generate().unwrap();
    for (presented, expected) in
        [(unknown.reveal(), "deny (403): unknown key"), ("not-a-key", "deny (401): malformed key")]
    {
        let output = run(meter(home.path()).args(["authorize", presented]));
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected);
    }
    ok(meter(home.path()).args(["keys", "revoke", &id]));
    let output = run(meter(home.path()).args(["authorize", &key]));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "deny (403): revoked key");
}

/// The nightly and monthly commands on what `archive` and `realtime` made of the same deliveries:
/// the rollup agrees with the realtime counters (reconcile corrects nothing), and the month's draft
/// invoices are written; issuing waits for the month to end.
#[test]
fn rollup_reconcile_and_report_agree_with_the_realtime_counters() {
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    let payload =
        std::fs::read_to_string(fixture("cwl-data-payload.json")).unwrap().replace("0123456789ab", &id);
    let file = home.path().join("events.json");
    std::fs::write(&file, meter_sim::cloudwatch::encode_subscription_event(payload.as_bytes())).unwrap();
    ok(meter(home.path()).args(["realtime", file.to_str().unwrap()]));
    ok(meter(home.path()).args(["archive", file.to_str().unwrap()]));

    let csv = ok(meter(home.path()).args(["rollup", "--from", "2026-11-30", "--to", "2026-12-01"]));
    assert!(csv.starts_with("key_id,day,successful_calls,failed_calls,usage_count\n"), "{csv}");
    assert!(
        csv.contains(&format!("{id},2026-11-30,")) && csv.contains(&format!("{id},2026-12-01,")),
        "{csv}"
    );
    let out = home.path().join("rollup.parquet");
    ok(meter(home.path()).args([
        "rollup",
        "--from",
        "2026-11-30",
        "--to",
        "2026-12-01",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(out.is_file());
    let bad = run(meter(home.path()).args(["rollup", "--from", "2026-12-01", "--to", "2026-11-30"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("after --to"));

    let reconciled = ok(meter(home.path()).args(["reconcile", "--from", "2026-11-29", "--to", "2026-12-01"]));
    assert!(reconciled.contains("corrected 0 day items"), "{reconciled}");
    assert!(reconciled.contains("orphan usage: 3 events of 2 unknown keys"), "{reconciled}");

    let pricing = example_pricing();
    let draft = ok(meter(home.path()).args([
        "report",
        "--month",
        "2026-11",
        "--draft",
        "--pricing",
        pricing.to_str().unwrap(),
    ]));
    assert!(draft.contains("2026-11 draft report written") && draft.contains("1 invoices"), "{draft}");
    let invoices =
        std::fs::read_to_string(home.path().join("reports/draft/month=2026-11/invoices.csv")).unwrap();
    assert!(invoices.contains("ada@example.com,payg,"), "{invoices}");

    // November 2026 is not over at the tests' instant, 30 November.
    let issue = run(meter(home.path()).args([
        "report",
        "--month",
        "2026-11",
        "--pricing",
        pricing.to_str().unwrap(),
    ]));
    assert_eq!(issue.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&issue.stderr).contains("2026-11 cannot be issued yet"));

    let broken = home.path().join("pricing.toml");
    std::fs::write(&broken, "currency = \"USD\"\ndefault_plan = \"x\"\n").unwrap();
    let refused = run(meter(home.path()).args([
        "report",
        "--month",
        "2026-11",
        "--draft",
        "--pricing",
        broken.to_str().unwrap(),
    ]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot be used"));
}

/// Bad usage, whether clap or the command finds it, exits 2 with a message that says what is wrong,
/// and writes nothing.
#[test]
fn bad_usage_exits_2_and_says_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["rollup", "--from", "2026-11-30", "--to", "2026-11-01"][..],
            "--from 2026-11-30 is after --to 2026-11-01",
        ),
        (
            &["rollup", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "r.json"][..],
            ".parquet or .csv",
        ),
        (&["reconcile", "--from", "2026-11-30", "--to", "2026-11-01"][..], "is after --to"),
        (&["demo", "--faults", "extreme"][..], "extreme"),
        (&["demo", "--events", "0"][..], "--events"),
        (&["demo", "--keys", "0"][..], "--keys"),
        (&["simulate", "--out", "x", "--faults", "extreme"][..], "extreme"),
        (&["demo", "--store", "sqlite:x.db"][..], "takes no --store"),
        (&["--archive", "elsewhere", "demo"][..], "takes no --archive"),
    ] {
        let output = run(meter(home.path()).args(args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!home.path().join("r.json").exists());
    // The home has a default: usage lines never show it as required.
    let help = run(meter(home.path()).args(["rollup", "--bogus"]));
    assert_eq!(help.status.code(), Some(2));
    let usage = String::from_utf8_lossy(&help.stderr);
    assert!(usage.contains("Usage:") && !usage.contains("Usage: meter --home"), "{usage}");
}

/// Logs written to a file or a pipe carry no terminal colour codes.
#[test]
fn logs_on_a_pipe_have_no_colour_codes() {
    let home = tempfile::tempdir().unwrap();
    // Usage of keys that do not exist is logged as a warning.
    let payload = std::fs::read_to_string(fixture("cwl-data-payload.json")).unwrap();
    let file = home.path().join("events.json");
    std::fs::write(&file, meter_sim::cloudwatch::encode_subscription_event(payload.as_bytes())).unwrap();
    let output = run(meter(home.path()).env("METER_LOG", "warn").args(["realtime", file.to_str().unwrap()]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown keys"), "a warning was expected: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// A delivery whose first line claims a time four days before it was logged, followed by calls on
/// both sides of midnight: the skewed line is rejected (and kept), every good call is billed on its
/// own day, and the month is issued.
#[test]
fn a_skewed_line_blocks_nothing_and_every_good_call_is_billed_on_its_own_day() {
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    let line = |request: &str, at: &str| {
        format!(
            r#"{{"type":"API_USAGE","requestId":"{request}","keyId":"{id}","timestamp":"{at}","statusCode":200,"shouldCount":true}}"#
        )
    };
    let millis = |at: &str| meter_model::time::parse_instant(at).unwrap().timestamp_millis();
    let events = [
        ("2026-10-31T23:59:58.000Z", line("skewed", "2026-10-27T23:59:58.000Z")),
        ("2026-10-31T23:59:58.500Z", line("before-midnight", "2026-10-31T23:59:58.400Z")),
        ("2026-11-01T00:00:00.300Z", line("after-midnight", "2026-11-01T00:00:00.200Z")),
        ("2026-11-01T00:00:01.000Z", line("logged-after-midnight", "2026-10-31T23:59:59.900Z")),
    ];
    let log_events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (logged, message))| {
            serde_json::json!({"id": format!("{i:056}"), "timestamp": millis(logged), "message": message})
        })
        .collect();
    let payload = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/api",
        "logStream": "2026/10/31/[$LATEST]abc", "subscriptionFilters": ["usage"], "logEvents": log_events,
    });
    let file = home.path().join("events.json");
    std::fs::write(&file, meter_sim::cloudwatch::encode_subscription_event(payload.to_string().as_bytes()))
        .unwrap();
    let applied = ok(meter(home.path()).args(["realtime", file.to_str().unwrap()]));
    assert!(applied.contains("timestamp_skew 1"), "{applied}");
    let archived = ok(meter(home.path()).args(["archive", file.to_str().unwrap()]));
    assert!(archived.contains("rejects kept"), "{archived}");
    let rejects = bytes_of_dir(&home.path().join("archive/rejects/year=2026/month=10/day=31"));
    assert!(contains(&rejects, "timestamp_skew") && contains(&rejects, "skewed"), "the line is kept");

    let reconciled = ok(meter(home.path()).args(["reconcile", "--from", "2026-10-27", "--to", "2026-11-01"]));
    assert!(reconciled.contains("corrected 0 day items"), "{reconciled}");
    let month = |m: &str| -> Value {
        serde_json::from_str(&ok(meter(home.path()).args(["usage", "show", &id, "--month", m, "--json"])))
            .unwrap()
    };
    assert_eq!(month("2026-10")["successfulCalls"], 2);
    assert_eq!(month("2026-11")["successfulCalls"], 1);

    let pricing = example_pricing();
    let issued =
        ok(meter(home.path()).args(["report", "--month", "2026-10", "--pricing", pricing.to_str().unwrap()]));
    assert!(issued.contains("2026-10 issued report written"), "{issued}");
    let invoices =
        std::fs::read_to_string(home.path().join("reports/issued/month=2026-10/invoices.csv")).unwrap();
    let row = invoices.lines().find(|l| l.contains("ada@example.com")).unwrap();
    assert_eq!(row.split(',').nth(4), Some("2"), "{invoices}");

    // Presigned links die with the credentials that signed them: an issued month's links can be
    // signed again (here printed; with --finance-topic, sent).
    let links = ok(meter(home.path()).args(["report", "--month", "2026-10", "--resend-links"]));
    assert!(links.contains("links made afresh") && links.contains("invoices.csv"), "{links}");
    assert!(links.contains("file://") && links.contains("\"sha256\""), "{links}");
    // Signed links need both the function URL and the key; the key is asked of KMS, and a KMS that
    // cannot be reached is said plainly.
    let half = run(meter(home.path()).args([
        "report",
        "--month",
        "2026-10",
        "--resend-links",
        "--links-url",
        "https://x.example",
    ]));
    assert_eq!(half.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("--links-key"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
    let unreachable = run(meter(home.path())
        .args(["report", "--month", "2026-10", "--resend-links", "--links-url", "https://x.example"])
        .args(["--links-key", "alias/meter-links"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test"));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sign a link") && stderr.contains("cannot reach KMS"), "{stderr}");
    let never = run(meter(home.path()).args(["report", "--month", "2026-09", "--resend-links"]));
    assert_eq!(never.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&never.stderr).contains("has not been issued"));
}

/// Revoking twice moves the epoch once (a move flushes every warm authorizer's cache), and an SNS that
/// cannot be reached is said in one plain sentence, not a dump of the SDK's internals.
#[test]
fn revoking_again_keeps_the_epoch_and_an_unreachable_sns_is_said_plainly() {
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    let first = ok(meter(home.path()).args(["keys", "revoke", &id]));
    assert!(first.contains("revocation epoch 1"), "{first}");
    let again = ok(meter(home.path()).args(["keys", "revoke", &id]));
    assert!(again.contains("already revoked") && again.contains("epoch stays 1"), "{again}");

    let output = run(meter(home.path())
        .args(["keys", "revoke", &id, "--revocation-topic", "arn:aws:sns:us-east-1:123456789012:revoked"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_MAX_ATTEMPTS", "1"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach SNS"), "{stderr}");
    assert!(!stderr.contains("dispatch failure") && !stderr.contains("connector"), "{stderr}");
}

/// A plan typo is refused when the key is created (with a pricing file configured), and a key on a
/// plan the pricing lacks makes the month's report fail with one list of every such key.
#[test]
fn plans_are_checked_against_the_pricing() {
    let home = tempfile::tempdir().unwrap();
    let pricing = example_pricing();
    let pricing = pricing.to_str().unwrap();
    let typo = run(meter(home.path())
        .args(["keys", "create", "--email", "a@example.com", "--plan", "por"])
        .args(["--pricing", pricing]));
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"por\" is not in the pricing"), "{stderr}");
    assert!(ok(meter(home.path()).args(["keys", "list"])).lines().count() <= 1, "no key was created");
    create(home.path(), "a@example.com", &["--plan", "pro", "--pricing", pricing]);

    // Without a pricing file at creation, the report names every key it cannot price.
    let (por, _) = create(home.path(), "b@example.com", &["--plan", "por"]);
    let (gold, _) = create(home.path(), "c@example.com", &["--plan", "gold"]);
    let report =
        run(meter(home.path()).args(["report", "--month", "2026-11", "--draft", "--pricing", pricing]));
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert_eq!(report.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 key(s)") && stderr.contains(&por) && stderr.contains(&gold), "{stderr}");
}

/// The SHA-256 of a key as another system stored it.
fn sha256(key: &str) -> String {
    HashedKey::of(key).as_str().to_owned()
}

fn import_json(home: &Path, file: &Path, extra: &[&str]) -> Value {
    serde_json::from_str(&ok(meter(home).args(["keys", "import"]).arg(file).args(extra).arg("--json")))
        .unwrap()
}

#[test]
fn keys_import_from_csv_and_json_lines_is_idempotent_and_keeps_what_the_old_system_knew() {
    let home = tempfile::tempdir().unwrap();
    let csv = home.path().join("keys.csv");
    std::fs::write(
        &csv,
        format!(
            "id,hashedKey,userEmail,status,plan,usageCount,successfulCalls,failedCalls,lastUsed,team\n\
             legacy-0001,{},Ada@Example.com,active,pro,120,100,5,2026-10-01T00:00:00Z,core\n\
             legacy-0002,{},bob@example.com,revoked,,10,9,0,,core\n",
            sha256("sk_live_one_0000000000001"),
            sha256("sk_live_two_0000000000002")
        ),
    )
    .unwrap();
    let dry = import_json(home.path(), &csv, &["--dry-run"]);
    assert_eq!((dry["created"].as_array().unwrap().len(), dry["dryRun"].as_bool()), (2, Some(true)));
    assert!(
        ok(meter(home.path()).args(["keys", "list", "--json"])).trim() == "[]",
        "a dry run writes nothing"
    );
    let first = import_json(home.path(), &csv, &["--pricing", example_pricing().to_str().unwrap()]);
    assert_eq!(first["created"], serde_json::json!(["legacy-0001", "legacy-0002"]));
    assert_eq!(first["ignoredFields"], serde_json::json!(["team"]));
    let again = import_json(home.path(), &csv, &[]);
    assert_eq!((again["created"].as_array().unwrap().len(), again["unchanged"].as_u64()), (0, Some(2)));

    let shown: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", "legacy-0001", "--json"])))
            .unwrap();
    assert_eq!((shown["userEmail"].as_str(), shown["plan"].as_str()), (Some("ada@example.com"), Some("pro")));
    assert_eq!(
        (shown["usageCount"].as_u64(), shown["imported"]["successfulCalls"].as_u64()),
        (Some(120), Some(100))
    );
    let usage: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["usage", "show", "legacy-0001", "--json"])))
            .unwrap();
    assert_eq!(usage["usageCount"], 120, "lifetime usage includes what the old system counted");

    // Keys of another format authorize through the hashed-key index; a revoked one is refused.
    let allowed = run(meter(home.path()).args(["authorize", "sk_live_one_0000000000001"]));
    assert_eq!(allowed.status.code(), Some(0), "{}", String::from_utf8_lossy(&allowed.stdout));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("legacy-0001"));
    assert_eq!(
        run(meter(home.path()).args(["authorize", "sk_live_two_0000000000002"])).status.code(),
        Some(1)
    );

    // JSON lines: a new key, and a changed plan for one already here (recorded with its time).
    let lines = home.path().join("keys.jsonl");
    std::fs::write(
        &lines,
        format!(
            "{{\"id\":\"legacy-0001\",\"hashedKey\":\"{}\",\"userEmail\":\"ada@example.com\",\"plan\":\"payg\",\
             \"usageCount\":120,\"successfulCalls\":100,\"failedCalls\":5,\"lastUsed\":\"2026-10-01T00:00:00Z\"}}\n\
             {{\"id\":\"legacy-0003\",\"hashedKey\":\"{}\",\"userEmail\":\"cy@example.com\",\"lastUsed\":1790000000000}}\n",
            sha256("sk_live_one_0000000000001"),
            sha256("sk_live_three_00000000003")
        ),
    )
    .unwrap();
    let third = import_json(home.path(), &lines, &[]);
    assert_eq!(third["created"], serde_json::json!(["legacy-0003"]));
    assert_eq!(third["updated"][0]["id"], "legacy-0001");
    assert_eq!(third["updated"][0]["changes"], serde_json::json!(["plan pro → payg"]));
    let shown: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", "legacy-0001", "--json"])))
            .unwrap();
    assert_eq!(shown["previousTerms"][0]["plan"], "pro");
}

#[test]
fn keys_import_reports_every_bad_row_by_line_and_imports_nothing() {
    let home = tempfile::tempdir().unwrap();
    let good = sha256("sk_live_good_000000000001");
    let file = home.path().join("bad.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"id\":\"ok-1\",\"hashedKey\":\"{good}\",\"userEmail\":\"ok@example.com\"}}\n\
             {{\"id\":\"bad-2\",\"hashedKey\":\"sk_live_plain\",\"userEmail\":\"b@example.com\"}}\n\
             {{\"id\":\"bad-3\",\"hashedKey\":\"{}\",\"userEmail\":\"c@example.com\",\"apiKey\":\"sk_live_secret\"}}\n\
             {{\"id\":\"bad-4\",\"hashedKey\":\"{}\",\"userEmail\":\"nobody\"}}\n\
             {{\"id\":\"bad-5\",\"hashedKey\":\"{good}\",\"userEmail\":\"d@example.com\"}}\n\
             {{\"id\":\"bad-6\",\"hashedKey\":\"{}\",\"userEmail\":\"e@example.com\",\"usageCount\":1,\"successfulCalls\":2}}\n\
             {{\"id\":\"bad-7\",\"hashedKey\":\"{}\",\"userEmail\":\"f@example.com\",\"plan\":\"gold\"}}\n\
             [1,2]\n",
            sha256("3"),
            sha256("4"),
            sha256("6"),
            sha256("7"),
        ),
    )
    .unwrap();
    let output = run(meter(home.path())
        .args(["keys", "import"])
        .arg(&file)
        .args(["--pricing", example_pricing().to_str().unwrap()]));
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "7 of 8 rows",
        "nothing was imported",
        "line 2 (id bad-2): hashedKey must be the 64 hex digits",
        "line 3 (id bad-3): has a field \"apiKey\"",
        "line 4 (id bad-4): userEmail",
        "line 5: its hashedKey is also on line 1",
        "line 6 (id bad-6): successfulCalls (2) and failedCalls (0) cannot exceed usageCount (1)",
        "line 7 (id bad-7): pricing: plan \"gold\" is not in the pricing",
        "line 8: not a JSON object",
    ] {
        assert!(said.contains(expected), "{expected:?} not in:\n{said}");
    }
    assert!(!said.contains("sk_live_secret"), "a plain key is never repeated");
    assert_eq!(ok(meter(home.path()).args(["keys", "list", "--json"])).trim(), "[]", "nothing half-imported");
}

#[test]
fn keys_update_records_the_change_and_rotate_keeps_the_old_key_for_its_grace_period() {
    let home = tempfile::tempdir().unwrap();
    let (id, key) = create(home.path(), "ada@example.com", &["--plan", "payg"]);
    let pricing = example_pricing();
    let refused =
        run(meter(home.path()).args(["keys", "update", &id, "--plan", "gold", "--pricing"]).arg(&pricing));
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert_eq!(run(meter(home.path()).args(["keys", "update", &id])).status.code(), Some(2));
    let said = ok(meter(home.path())
        .args(["keys", "update", &id, "--plan", "pro", "--email", "Team@Example.com", "--pricing"])
        .arg(&pricing));
    assert!(
        said.contains("plan payg → pro") && said.contains("customer ada@example.com → team@example.com"),
        "{said}"
    );
    let shown: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", &id, "--json"]))).unwrap();
    assert_eq!(
        (shown["plan"].as_str(), shown["userEmail"].as_str()),
        (Some("pro"), Some("team@example.com"))
    );
    assert_eq!(shown["previousTerms"][0]["userEmail"], "ada@example.com");
    assert_eq!(shown["previousTerms"][0]["plan"], "payg");

    let output = run(meter(home.path())
        .env("METER_LOG", "debug")
        .args(["keys", "rotate", &id, "--grace", "2s", "--json"]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rotated: Value = serde_json::from_slice(&output.stdout).unwrap();
    let (new_id, new_key) = (rotated["id"].as_str().unwrap(), rotated["key"].as_str().unwrap());
    // The new key is printed once and never logged or stored.
    let secret = &new_key[16..];
    assert!(!contains(&output.stderr, secret), "the log holds the new key");
    assert!(!contains(&bytes_of_dir(home.path()), secret), "the store holds the new key");
    assert_eq!(rotated["rotatedFrom"], id.as_str());
    let new: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", new_id, "--json"]))).unwrap();
    // The same customer and plan: both keys' usage is on one invoice.
    assert_eq!((new["userEmail"].as_str(), new["plan"].as_str()), (Some("team@example.com"), Some("pro")));
    let authorize = |key: &str| run(meter(home.path()).args(["authorize", key])).status.code();
    assert_eq!(
        (authorize(&key), authorize(new_key)),
        (Some(0), Some(0)),
        "both work during the grace period"
    );
    let again = run(meter(home.path()).args(["keys", "rotate", &id]));
    assert_eq!(again.status.code(), Some(1), "a key is rotated once");
    // From the grace end on (a command started at that instant), the old key is refused.
    let grace_end = rotated["graceEndsAt"].as_str().unwrap();
    let after = run(meter_at(home.path(), grace_end).args(["authorize", &key]));
    assert_eq!(after.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&after.stdout).contains("rotated key past its grace period"));
    assert_eq!(run(meter_at(home.path(), grace_end).args(["authorize", new_key])).status.code(), Some(0));
    assert!(ok(meter_at(home.path(), grace_end).args(["keys", "list"])).contains("expired"));
    assert!(!ok(meter(home.path()).args(["keys", "list"])).contains("expired"));

    // A grace of 0 revokes the old key at once.
    let (other, other_key) = create(home.path(), "bob@example.com", &[]);
    ok(meter(home.path()).args(["keys", "rotate", &other, "--grace", "0"]));
    assert_eq!(authorize(&other_key), Some(1));
    let bad = run(meter(home.path()).args(["keys", "rotate", &other, "--grace", "45d"]));
    assert_eq!(bad.status.code(), Some(2));
}

/// The month rules on whatever date the suite runs, a year ahead: a key made "now" is priced in the
/// current month and not in the one before, and the current month cannot be issued before it ends.
#[test]
fn the_month_rules_hold_a_year_from_today() {
    let home = tempfile::tempdir().unwrap();
    let now = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let month = meter_model::Month::of(chrono::DateTime::parse_from_rfc3339(&now).unwrap().to_utc());
    let (gold, _) = create_at(home.path(), &now, "c@example.com", &["--plan", "gold"]);
    let pricing = example_pricing();
    let report = |month: meter_model::Month, extra: &[&str]| {
        run(meter_at(home.path(), &now)
            .args(["report", "--month", &month.to_string(), "--pricing", pricing.to_str().unwrap()])
            .args(extra))
    };
    let current = report(month, &["--draft"]);
    let stderr = String::from_utf8_lossy(&current.stderr);
    assert_eq!(current.status.code(), Some(1), "the key is live this month: {stderr}");
    assert!(stderr.contains("1 key(s)") && stderr.contains(&gold), "{stderr}");
    let before = report(month.pred(), &["--draft"]);
    assert!(
        before.status.success(),
        "not live the month before: {}",
        String::from_utf8_lossy(&before.stderr)
    );

    ok(meter_at(home.path(), &now).args(["keys", "update", &gold, "--plan", "pro"]));
    let issue = report(month, &[]);
    let stderr = String::from_utf8_lossy(&issue.stderr);
    assert_eq!(issue.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{month} cannot be issued yet")), "{stderr}");
}

#[test]
fn a_bad_meter_now_is_bad_usage() {
    let home = tempfile::tempdir().unwrap();
    let output = run(meter_at(home.path(), "next tuesday").args(["keys", "list"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("METER_NOW=\"next tuesday\" is not an RFC 3339 instant"), "{stderr}");
}

/// What Firehose gave up on is fed back through the transformer's path: archived, counted once
/// however often it is replayed (the key's totals included), and a record that still cannot be
/// decoded is named and left.
#[test]
fn records_firehose_gave_up_on_are_replayed_once() {
    use base64::Engine as _;
    let home = tempfile::tempdir().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &[]);
    let line = |request: &str| {
        format!(
            r#"{{"type":"API_USAGE","requestId":"{request}","keyId":"{id}","timestamp":"2026-11-03T10:00:00.000Z","statusCode":200,"shouldCount":true}}"#
        )
    };
    let millis = meter_model::time::parse_instant("2026-11-03T10:00:00.100Z").unwrap().timestamp_millis();
    let log_events: Vec<Value> = ["r1", "r2", "r3"]
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::json!({"id": format!("{i:056}"), "timestamp": millis, "message": line(r)}))
        .collect();
    let payload = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/api",
        "logStream": "2026/11/03/[$LATEST]abc", "subscriptionFilters": ["usage"], "logEvents": log_events,
    });
    let raw = meter_sim::cloudwatch::gzip(payload.to_string().as_bytes());
    // The error output's shape for a failed transformation (Firehose's documented fields).
    let record = |data: &[u8]| {
        serde_json::json!({
            "attemptsMade": 4, "arrivalTimestamp": millis, "errorCode": "Lambda.FunctionError",
            "errorMessage": "The Lambda function was successfully invoked but it returned an error result.",
            "attemptEndingTimestamp": millis + 300_000,
            "rawData": base64::engine::general_purpose::STANDARD.encode(data),
            "lambdaArn": "arn:aws:lambda:us-east-1:123456789012:function:meter-prod-archive-transformer:$LATEST"
        })
        .to_string()
    };
    let failed = home.path().join("processing-failed/2026/11/03/10");
    std::fs::create_dir_all(&failed).unwrap();
    std::fs::write(failed.join("meter-prod-usage-1-2026-11-03-10-05-00-abc"), record(&raw) + "\n").unwrap();
    let from = home.path().join("processing-failed");
    let replay = |extra: &[&str]| run(meter(home.path()).arg("replay-failed").arg(&from).args(extra));

    let first: Value = serde_json::from_slice(&replay(&["--json"]).stdout).unwrap();
    assert_eq!((first["records"].as_u64(), first["usageEvents"].as_u64()), (Some(1), Some(3)), "{first}");
    assert_eq!(first["deliveriesCounted"], 1, "{first}");
    let again = String::from_utf8(replay(&[]).stdout).unwrap();
    assert!(again.contains("0 deliveries counted, 1 counted before"), "{again}");
    let shown: Value = serde_json::from_str(&ok(
        meter(home.path()).args(["usage", "show", &id, "--month", "2026-11", "--json"])
    ))
    .unwrap();
    assert_eq!(shown["successfulCalls"], 3, "{shown}");
    let key: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", &id, "--json"]))).unwrap();
    assert_eq!(key["successfulCalls"], 3, "the key's own totals, live: {key}");
    let reconciled = ok(meter(home.path()).args(["reconcile", "--from", "2026-11-03", "--to", "2026-11-03"]));
    assert!(reconciled.contains("corrected 0 day items"), "archived exactly once: {reconciled}");

    // A record that still cannot be decoded is named, and the replay says so with its exit code.
    std::fs::write(failed.join("meter-prod-usage-1-2026-11-03-10-06-00-def"), record(b"not gzip") + "\n")
        .unwrap();
    let output = replay(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 records still cannot be decoded") && stderr.contains("10-06-00-def line 1"),
        "{stderr}"
    );
    // An object that is not Firehose's error output stops the replay before anything is written.
    std::fs::write(failed.join("stray.json"), "{\"hello\": 1}\n").unwrap();
    let output = replay(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stray.json line 1 is not a Firehose error record"), "{stderr}");
}

#[test]
fn a_plans_quota_travels_with_its_keys_through_create_update_and_rotate() {
    let home = tempfile::tempdir().unwrap();
    let pricing = home.path().join("pricing.toml");
    std::fs::write(
        &pricing,
        "currency = \"USD\"\ndefault_plan = \"payg\"\n\
         [plans.payg]\nmonthly_fee = \"0.00\"\ntiers = [{ price_per_1000 = \"0.50\" }]\n\
         [plans.free]\nmonthly_fee = \"0.00\"\ntiers = [{ price_per_1000 = \"0\" }]\n\
         quota = { calls = 2, mode = \"hard\" }\nalerts = [50]\n",
    )
    .unwrap();
    let pricing = pricing.to_str().unwrap();
    let (id, _) = create(home.path(), "ada@example.com", &["--plan", "free", "--pricing", pricing]);
    let show = |id: &str| -> Value {
        serde_json::from_str(&ok(meter(home.path()).args(["keys", "show", id, "--json"]))).unwrap()
    };
    assert_eq!(show(&id)["quota"], serde_json::json!({"calls": 2, "mode": "hard", "alerts": [50]}));
    let text = ok(meter(home.path()).args(["keys", "show", &id]));
    assert!(text.contains("quota            2 billable calls a month, hard, alerts at 50%"), "{text}");
    let usage: Value =
        serde_json::from_str(&ok(meter(home.path()).args(["usage", "show", &id, "--json"]))).unwrap();
    assert_eq!(
        usage["quota"],
        serde_json::json!({"calls": 2, "mode": "hard", "period": &NOW[..7], "used": 0, "remaining": 2, "refused": false})
    );
    let text = ok(meter(home.path()).args(["usage", "show", &id]));
    assert!(text.contains("quota            0 of 2 billable calls used by ada@example.com"), "{text}");
    let rotated: Value = serde_json::from_str(&ok(
        meter(home.path()).args(["keys", "rotate", &id, "--grace", "1h", "--json"])
    ))
    .unwrap();
    let new_id = rotated["id"].as_str().unwrap();
    assert_eq!(show(new_id)["quota"], show(&id)["quota"], "the new key counts against the same quota");
    // A plan change must bring the new plan's quota: without the pricing it is refused, not guessed.
    let blind = run(meter(home.path()).args(["keys", "update", new_id, "--plan", "payg"]));
    assert_eq!(blind.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&blind.stderr).contains("give --pricing FILE"));
    ok(meter(home.path()).args(["keys", "update", new_id, "--plan", "payg", "--pricing", pricing]));
    assert_eq!(show(new_id).get("quota"), None, "payg has no quota");
}
