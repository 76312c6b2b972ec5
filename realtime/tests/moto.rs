//! The realtime stage against moto: the transformer's counters on DynamoDB and the archive on S3.
//! Fails (does not skip) without the emulator.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use common::*;
use meter_archive::Archive;
use meter_model::{KeyId, KeyStore, ManualClock, Tally, UsageReader, UsageTotals};
use meter_realtime::transform::{FirehoseEvent, RecordResult, transform};
use meter_realtime::{Archiver, RealtimeCounters, RetryPolicy};
use meter_store::{DynamoStore, S3Prefix, SqliteStore, TableNames};
use parquet::file::reader::{FileReader, SerializedFileReader};

fn firehose_event(records: &[&str]) -> FirehoseEvent {
    let records: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let data = serde_json::from_str::<serde_json::Value>(event).unwrap()["awslogs"]["data"].clone();
            serde_json::json!({ "recordId": format!("r{i}"), "data": data })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "invocationId": "i", "records": records })).unwrap()
}

#[tokio::test]
async fn the_transformer_counts_a_delivery_once_on_dynamodb_however_often_it_arrives() {
    let store = meter_testkit::fresh_dynamo_store().await;
    seed_fixture_keys(&store).await;
    let counters =
        RealtimeCounters::new(&store, ManualClock::new(at("2026-11-30T14:04:00Z")), RetryPolicy::default());
    let bucket = meter_testkit::fresh_bucket().await;
    let rejects = Archive::new(S3Prefix::new(meter_testkit::s3_client(), &bucket, ""));
    let delivery = read_fixture("subscription-event.json");
    // Twice in one invocation (a redelivery buffered with the original), then the invocation retried.
    let event = firehose_event(&[&delivery, &delivery]);
    let (response, first) = transform(&event, &rejects, &counters).await.unwrap();
    assert_eq!(response.records.len(), 2, "both records answered for the archive");
    let apply = &first.counters.apply;
    assert_eq!((apply.deliveries_applied, apply.deliveries_already_applied), (1, 1), "{apply:?}");
    assert_eq!(first.counters.unknown_key_events(), 1);
    let (_, retried) = transform(&event, &rejects, &counters).await.unwrap();
    assert_eq!(retried.counters.apply.deliveries_already_applied, 2);
    assert_eq!(retried.counters.apply.key_days_written, 0);

    let days = |key: &'static str| {
        let store = &store;
        async move { UsageTotals::of_days(&store.lifetime_usage(&KeyId::parse(key).unwrap()).await.unwrap()) }
    };
    let a = days(KEY_A).await;
    assert_eq!(a.tally, Tally { successful_calls: 2, failed_calls: 2, usage_count: 5 });
    assert_eq!(a.last_used, Some(at("2026-12-01T00:00:00.000Z")));
    assert_eq!(days(KEY_B).await.tally, Tally { successful_calls: 1, failed_calls: 1, usage_count: 2 });
    assert_eq!(
        store.get_key(&KeyId::parse(UNKNOWN).unwrap()).await.unwrap(),
        None,
        "unknown keys create no item"
    );
}

#[tokio::test]
async fn with_dynamodb_down_the_archive_records_are_still_returned() {
    let down = DynamoStore::new(
        meter_testkit::dynamodb_client(),
        TableNames { api_keys: "NoSuchKeys".into(), usage_counters: "NoSuchCounters".into() },
    );
    let quick = RetryPolicy::new(2, std::time::Duration::from_millis(1), std::time::Duration::from_millis(1));
    let counters = RealtimeCounters::new(&down, ManualClock::new(at("2026-11-30T14:04:00Z")), quick);
    let bucket = meter_testkit::fresh_bucket().await;
    let rejects = Archive::new(S3Prefix::new(meter_testkit::s3_client(), &bucket, ""));
    let event = firehose_event(&[&read_fixture("subscription-event.json")]);
    let (response, stats) = transform(&event, &rejects, &counters).await.unwrap();
    assert_eq!(response.records[0].result, RecordResult::Ok);
    assert_eq!(stats.counters.apply.not_applied.usage_count, 8);
    assert!(stats.counters.apply.failure.as_deref().unwrap().contains("meter store init"));
}

#[tokio::test]
async fn the_archive_lands_in_s3_as_parquet_by_day_with_rejects_beside_it() {
    let bucket = meter_testkit::fresh_bucket().await;
    let s3 = meter_testkit::s3_client();
    let mut archiver = Archiver::new(Archive::new(S3Prefix::new(s3.clone(), &bucket, "usage")), 1000);
    archiver.add_event(read_fixture("subscription-event.json").as_bytes(), "fixture").await.unwrap();
    let summary = archiver.finish().await.unwrap();
    assert!(summary.undecodable.is_empty());

    let listed = s3.list_objects_v2().bucket(&bucket).prefix("usage/").send().await.unwrap();
    let mut keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys[0].starts_with("usage/rejects/year=2026/month=11/day=30/") && keys[0].ends_with(".jsonl"),
        "{keys:?}"
    );
    assert!(
        keys[1].starts_with("usage/year=2026/month=11/day=30/") && keys[1].ends_with(".parquet"),
        "{keys:?}"
    );
    assert!(keys[2].starts_with("usage/year=2026/month=12/day=01/"), "each event in its own day: {keys:?}");

    let object = s3.get_object().bucket(&bucket).key(&keys[1]).send().await.unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes();
    let reader = SerializedFileReader::new(bytes).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 7);
}

#[tokio::test]
async fn the_transformer_keeps_rejects_in_s3() {
    let bucket = meter_testkit::fresh_bucket().await;
    let s3 = meter_testkit::s3_client();
    let event: FirehoseEvent = serde_json::from_str(&read_fixture("firehose-event.json")).unwrap();
    let counters = RealtimeCounters::new(
        SqliteStore::open_in_memory().unwrap(),
        ManualClock::new(at("2026-11-30T14:04:00Z")),
        RetryPolicy::default(),
    );
    let (_, stats) =
        transform(&event, &Archive::new(S3Prefix::new(s3.clone(), &bucket, "")), &counters).await.unwrap();
    assert_eq!(stats.reject_files, 1);
    let listed = s3.list_objects_v2().bucket(&bucket).prefix("rejects/").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_error() {
    let mut archiver =
        Archiver::new(Archive::new(S3Prefix::new(meter_testkit::s3_client(), "no-such-bucket-here", "")), 10);
    let err =
        archiver.add_event(read_fixture("subscription-event.json").as_bytes(), "fixture").await.unwrap_err();
    assert!(err.to_string().contains("no-such-bucket-here"), "{err}");
}
