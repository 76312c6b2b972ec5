//! The Firehose transformer on the fixture invocation: every record answered once, the right result for
//! each kind of record, archive rows and partitions as the contract says, and rejects kept.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use meter_archive::Archive;
use meter_archive::format::JsonRow as ArchiveJsonRow;
use meter_model::ManualClock;
use meter_realtime::transform::{FirehoseEvent, RecordResult, transform};
use meter_realtime::{RealtimeCounters, RetryPolicy};
use meter_store::{LocalDir, SqliteStore};

#[tokio::test]
async fn answers_every_record_once_with_the_right_result() {
    let event: FirehoseEvent = serde_json::from_str(&read_fixture("firehose-event.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    seed_fixture_keys(&store).await;
    let counters =
        RealtimeCounters::new(&store, ManualClock::new(at("2026-11-30T14:04:00Z")), RetryPolicy::default());
    let (response, stats) =
        transform(&event, &Archive::new(LocalDir::new(dir.path())), &counters).await.unwrap();

    let ids: Vec<_> = response.records.iter().map(|r| r.record_id.as_str()).collect();
    let expected: Vec<_> = event.records.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(ids, expected, "each input recordId answered once, in order");
    let results: Vec<_> = response.records.iter().map(|r| r.result).collect();
    assert_eq!(
        results,
        [
            RecordResult::Ok,               // usage events
            RecordResult::Dropped,          // control message
            RecordResult::ProcessingFailed, // not gzip
            RecordResult::Dropped,          // only platform lines
            RecordResult::ProcessingFailed, // truncated gzip
        ]
    );
    assert_eq!((stats.ok, stats.dropped, stats.failed), (1, 2, 2));
    // The usage of the Ok record reached the counters: one delivery, one write per key and day (a lone
    // single call is not worth parking).
    let apply = &stats.counters.apply;
    assert_eq!(
        (apply.deliveries_applied, apply.key_days_written, apply.parked_entries),
        (1, 3, 0),
        "{apply:?}"
    );
    assert_eq!(stats.counters.unknown_key_events(), 1);
    // Failed records carry their original data to Firehose's error output.
    assert_eq!(response.records[2].data, event.records[2].data);

    let ok = &response.records[0];
    let keys = &ok.metadata.as_ref().unwrap().partition_keys;
    assert_eq!((keys["year"].as_str(), keys["month"].as_str(), keys["day"].as_str()), ("2026", "11", "30"));
    let rows: Vec<ArchiveJsonRow> = String::from_utf8(STANDARD.decode(&ok.data).unwrap())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 8, "usage events once each");
    assert_eq!(
        rows[0],
        ArchiveJsonRow {
            request_id: "c6af9ac6-7b61-11e6-9a41-93e8deadbee1".into(),
            key_id: KEY_A.into(),
            ts: at("2026-11-30T14:03:07.123Z").timestamp_millis(),
            status_code: 200,
            should_count: true,
            method: Some("GET".into()),
            resource: Some("/v1/items/{id}".into()),
            latency_ms: Some(42),
        }
    );
    assert!(
        rows.iter().any(|r| r.ts == at("2026-12-01T00:00:00.000Z").timestamp_millis()),
        "the whole record, midnight included"
    );

    // The two rejected lines are kept with their reasons, by the log event's day.
    let rejects_dir = dir.path().join("rejects/year=2026/month=11/day=30");
    let files: Vec<_> = std::fs::read_dir(&rejects_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let kept: Vec<serde_json::Value> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<_> = kept.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["malformed_json", "invalid_statusCode"]);
    assert_eq!(kept[0]["logGroup"], "/aws/lambda/items-api");
}

#[tokio::test]
async fn a_retried_invocation_rewrites_the_same_reject_file() {
    let event: FirehoseEvent = serde_json::from_str(&read_fixture("firehose-event.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(LocalDir::new(dir.path()));
    let counters = RealtimeCounters::new(
        SqliteStore::open_in_memory().unwrap(),
        ManualClock::new(at("2026-11-30T14:04:00Z")),
        RetryPolicy::default(),
    );
    transform(&event, &archive, &counters).await.unwrap();
    let (_, again) = transform(&event, &archive, &counters).await.unwrap();
    assert!(again.counters.apply.was_duplicate(), "a retried invocation counts nothing again");
    let files = std::fs::read_dir(dir.path().join("rejects/year=2026/month=11/day=30")).unwrap().count();
    assert_eq!(files, 1);
}

/// A full Firehose buffer of the large reference traffic (3 MB of records): what the transformer
/// returns fits Lambda's 6 MB response, and whatever would not is archived directly, never lost.
#[tokio::test]
async fn a_full_buffer_fits_the_response_or_is_archived_directly() {
    use meter_realtime::Buffering;
    use meter_sim::traffic::{Faults, Profile, SimConfig, Simulator};
    let profile = Profile::named("large").unwrap();
    let mut sim =
        Simulator::new(SimConfig::steady(profile, 2, "2026-11".parse().unwrap(), 5, Faults::default()));
    let (mut records, mut bytes, mut events) = (Vec::new(), 0u64, 0u64);
    'fill: while let Some((_, deliveries)) = sim.next_slice() {
        for delivery in deliveries {
            if bytes + delivery.record_bytes() > Buffering::DEPLOYED.max_bytes {
                break 'fill;
            }
            bytes += delivery.record_bytes();
            events += delivery.log_events;
            let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &delivery.record);
            records.push(serde_json::json!({ "recordId": format!("r{}", records.len()), "data": data }));
        }
    }
    let event: FirehoseEvent = serde_json::from_value(serde_json::json!({ "records": records })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let counters = RealtimeCounters::new(
        SqliteStore::open_in_memory().unwrap(),
        ManualClock::new(at("2026-11-01T00:03:00Z")),
        RetryPolicy::default(),
    );
    let (response, stats) =
        transform(&event, &Archive::new(LocalDir::new(dir.path())), &counters).await.unwrap();
    let json = serde_json::to_vec(&response).unwrap();
    eprintln!(
        "{events} events in {bytes} bytes of records: response {} bytes ({:.2}x the records), {} records archived directly",
        json.len(),
        json.len() as f64 / bytes as f64,
        stats.archived_directly
    );
    assert!(json.len() < 6 * 1024 * 1024, "{} bytes", json.len());
    assert_eq!(stats.lines.usage_events, events);

    // Squeezed into a budget of a third, the rest is archived directly: every event in a row or a file.
    let squeezed = tempfile::tempdir().unwrap();
    let archive = Archive::new(LocalDir::new(squeezed.path()));
    let budget = stats.response_bytes / 3;
    let (response, stats) =
        meter_realtime::transform::transform_within(&event, &archive, &counters, budget, None).await.unwrap();
    assert!(stats.archived_directly > 0 && stats.response_bytes <= budget);
    let day = squeezed.path().join("year=2026/month=11/day=01");
    let files: Vec<_> = std::fs::read_dir(&day).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        rows_answered(&response) + rows_in_files(squeezed.path()),
        events,
        "every event in the response or the archive"
    );
}

/// The worst case for Lambda's 6 MB response cap: a full 3 MB buffer of small deliveries (a few usage
/// lines each, with only the required fields), record ids longer than Firehose's, and records of
/// every kind. The whole serialized answer (record ids, results, partition keys, punctuation) stays
/// within the budget, its size is what the transformer counted, and every event is in a row or in a
/// file the transformer wrote itself.
#[tokio::test]
async fn the_whole_answer_fits_lambdas_cap_for_the_worst_buffer() {
    use meter_realtime::Buffering;
    use meter_realtime::transform::{LAMBDA_RESPONSE_LIMIT_BYTES, RESPONSE_BUDGET_BYTES};
    let id = |n: usize| format!("{n:0>200}");
    let (mut records, mut bytes, mut events) = (Vec::new(), 0u64, 0u64);
    while bytes < Buffering::DEPLOYED.max_bytes {
        let n = records.len();
        let data = if n % 500 == 7 {
            STANDARD.encode(b"not gzip at all") // answered ProcessingFailed, with its data
        } else {
            let log_events: Vec<_> = (0..5)
                .map(|i| {
                    let line = format!(
                        r#"{{"type":"API_USAGE","requestId":"{n}-{i}","keyId":"k{}","statusCode":200}}"#,
                        n % 977
                    );
                    serde_json::json!({"id": format!("{n}{i}"), "timestamp": 1_796_000_000_000u64 + n as u64, "message": line})
                })
                .collect();
            events += log_events.len() as u64;
            let payload = serde_json::json!({
                "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/api",
                "logStream": format!("2026/11/30/[$LATEST]{n:032x}"), "subscriptionFilters": ["meter"],
                "logEvents": log_events,
            });
            STANDARD.encode(meter_sim::cloudwatch::gzip(payload.to_string().as_bytes()))
        };
        bytes += (data.len() + id(n).len()) as u64;
        records.push(serde_json::json!({ "recordId": id(n), "data": data }));
    }
    let event: FirehoseEvent = serde_json::from_value(serde_json::json!({ "records": records })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (response, stats) = transform_into(dir.path(), &event).await;
    let json = serde_json::to_vec(&response).unwrap();
    eprintln!(
        "{} records, {events} events: answer {} bytes (budget {RESPONSE_BUDGET_BYTES}, cap {LAMBDA_RESPONSE_LIMIT_BYTES}), {} archived directly",
        event.records.len(),
        json.len(),
        stats.archived_directly
    );
    assert_eq!(json.len() as u64, stats.response_bytes, "the transformer counts what it answers");
    assert!(
        stats.response_bytes <= RESPONSE_BUDGET_BYTES && RESPONSE_BUDGET_BYTES < LAMBDA_RESPONSE_LIMIT_BYTES
    );
    assert!(stats.archived_directly > 0, "this buffer would not fit whole: {}", json.len());
    assert_eq!(response.records.len(), event.records.len());
    assert!(
        stats.failed > 0
            && stats.failed + stats.ok + stats.archived_directly + stats.dropped
                == event.records.len() as u64
    );
    assert_eq!(
        rows_answered(&response) + rows_in_files(dir.path()),
        events,
        "every event in the answer or the archive"
    );
}

/// A counter store in a brownout: every write hangs for 20 s (as DynamoDB's calls do before the SDK
/// times them out), and the retry policy would try six times.
struct Brownout;

impl meter_model::UsageWriter for Brownout {
    async fn apply_deliveries(
        &self,
        _: &[meter_model::BatchDelta],
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<meter_model::ApplyReport, meter_model::StoreError> {
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        Err(meter_model::StoreError::Unavailable {
            operation: "apply deliveries".into(),
            hint: "timed out".into(),
            source: None,
        })
    }
}

/// The counters never hold up the archive: with the store in a brownout, the transformer gives the
/// counters up at their deadline, reports their usage as not applied, and answers the archive records.
#[tokio::test(start_paused = true)]
async fn a_counter_brownout_never_keeps_the_archive_answer_past_its_deadline() {
    let event: FirehoseEvent = serde_json::from_str(&read_fixture("firehose-event.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let counters =
        RealtimeCounters::new(Brownout, ManualClock::new(at("2026-11-30T14:04:00Z")), RetryPolicy::default());
    let started = tokio::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(45);
    let (response, stats) = meter_realtime::transform::transform_before(
        &event,
        &Archive::new(LocalDir::new(dir.path())),
        &counters,
        deadline,
    )
    .await
    .unwrap();
    assert_eq!(tokio::time::Instant::now(), deadline, "given up at the deadline, not after six 20 s tries");
    assert_eq!(response.records[0].result, RecordResult::Ok, "the archive rows go back");
    assert!(stats.counters.apply.not_applied.usage_count > 0);
    assert_eq!(stats.counters.apply.not_applied.usage_count, stats.lines.usage_events);
    assert!(
        stats.counters.apply.failure.as_deref().unwrap().contains("ran out"),
        "{:?}",
        stats.counters.apply.failure
    );
}

/// Transforms `event` into an archive under `dir`, the counters in a fresh embedded store.
async fn transform_into(
    dir: &std::path::Path,
    event: &FirehoseEvent,
) -> (meter_realtime::transform::FirehoseResponse, meter_realtime::transform::TransformStats) {
    let counters = RealtimeCounters::new(
        SqliteStore::open_in_memory().unwrap(),
        ManualClock::new(at("2026-12-01T00:03:00Z")),
        RetryPolicy::default(),
    );
    transform(event, &Archive::new(LocalDir::new(dir)), &counters).await.unwrap()
}

/// The archive rows an answer hands back to Firehose.
fn rows_answered(response: &meter_realtime::transform::FirehoseResponse) -> u64 {
    response
        .records
        .iter()
        .filter(|r| r.result == RecordResult::Ok)
        .map(|r| String::from_utf8(STANDARD.decode(&r.data).unwrap()).unwrap().lines().count() as u64)
        .sum()
}

/// The rows of every Parquet file under `dir`.
fn rows_in_files(dir: &std::path::Path) -> u64 {
    let mut rows = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rows += rows_in_files(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let reader =
                parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
                    .unwrap();
            let n = parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows();
            rows += u64::try_from(n).unwrap();
        }
    }
    rows
}
