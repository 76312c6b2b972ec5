//! Shared by the realtime tests: fixtures, keys and payload builders.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a different part

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use meter_model::time::parse_instant;
use meter_model::{ApiKeyRecord, Email, HashedKey, KeyId, KeyStore, NewKey};

pub(crate) const KEY_A: &str = "0123456789ab";
pub(crate) const KEY_B: &str = "0123456789ac";
pub(crate) const UNKNOWN: &str = "zzzzzzzzzzzz";

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub(crate) fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    parse_instant(text).unwrap()
}

pub(crate) fn record(id: &str) -> ApiKeyRecord {
    ApiKeyRecord::new(NewKey {
        id: KeyId::parse(id).unwrap(),
        hashed_key: HashedKey::of(&format!("mk_{id}_fixture")),
        user_email: Email::parse(&format!("{id}@example.com")).unwrap(),
        plan: None,
        name: None,
        created_at: at("2026-11-01T00:00:00Z"),
    })
}

/// Creates the fixture's keys: A active, B revoked (its usage still counts).
pub(crate) async fn seed_fixture_keys<S: KeyStore>(store: &S) {
    store.insert_key(&record(KEY_A)).await.unwrap();
    store.insert_key(&record(KEY_B)).await.unwrap();
    store.revoke_key(&KeyId::parse(KEY_B).unwrap(), at("2026-11-30T15:00:00Z")).await.unwrap();
}

/// A usage line.
pub(crate) fn usage_line(
    request_id: &str,
    key: &str,
    ts: DateTime<Utc>,
    status: u16,
    should_count: bool,
) -> String {
    serde_json::json!({
        "type": "API_USAGE", "requestId": request_id, "keyId": key,
        "timestamp": meter_model::time::format_instant(ts), "statusCode": status, "shouldCount": should_count,
    })
    .to_string()
}

/// A Lambda subscription event holding `messages` as one delivery from `stream`. Each log event is
/// logged when its line was printed (a usage line's own `timestamp`, else a fixed time), as CloudWatch
/// Logs records it.
pub(crate) fn subscription_event(stream: &str, first_id: u64, messages: &[String]) -> String {
    let logged = |message: &str| {
        serde_json::from_str::<serde_json::Value>(message)
            .ok()
            .and_then(|line| {
                line["timestamp"].as_str().and_then(|ts| meter_model::time::parse_instant(ts).ok())
            })
            .map_or(1_796_047_400_000_i64, |at| at.timestamp_millis())
    };
    let events: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": format!("{:056}", first_id + i as u64), "timestamp": logged(m), "message": m}))
        .collect();
    let payload = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/api",
        "logStream": stream, "subscriptionFilters": ["meter-usage"], "logEvents": events,
    });
    meter_sim::cloudwatch::encode_subscription_event(payload.to_string().as_bytes())
}
