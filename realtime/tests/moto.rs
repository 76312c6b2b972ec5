//! The realtime stage against moto: the processor on DynamoDB and the archive on S3. Fails (does not
//! skip) without the emulator.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use common::*;
use meter_archive::Archive;
use meter_model::{KeyId, KeyStore, ManualClock, Tally};
use meter_realtime::transform::{FirehoseEvent, transform};
use meter_realtime::{Archiver, RetryPolicy, UsageProcessor};
use meter_store::S3Prefix;
use parquet::file::reader::{FileReader, SerializedFileReader};

#[tokio::test]
async fn a_delivery_applied_twice_on_dynamodb_counts_once() {
    let store = meter_testkit::fresh_dynamo_store().await;
    seed_fixture_keys(&store).await;
    let processor =
        UsageProcessor::new(store, ManualClock::new(at("2026-11-30T14:04:00Z")), RetryPolicy::default());
    let event = read_fixture("subscription-event.json");
    let first = processor.process_event(event.as_bytes()).await.unwrap();
    assert_eq!(first.unknown_key_events, 1);
    let second = processor.process_event(event.as_bytes()).await.unwrap();
    assert!(second.apply.was_duplicate(), "{:?}", second.apply);
    let store = processor.store();
    let totals =
        |key: &'static str| async move { store.get_key(&KeyId::parse(key).unwrap()).await.unwrap().unwrap() };
    let a = totals(KEY_A).await;
    assert_eq!(a.totals, Tally { successful_calls: 2, failed_calls: 2, usage_count: 5 });
    assert_eq!(a.last_used, Some(at("2026-12-01T00:00:00.000Z")));
    assert_eq!(totals(KEY_B).await.totals, Tally { successful_calls: 1, failed_calls: 1, usage_count: 2 });
    assert_eq!(
        store.get_key(&KeyId::parse(UNKNOWN).unwrap()).await.unwrap(),
        None,
        "unknown keys create no item"
    );
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
    let (_, stats) = transform(&event, &Archive::new(S3Prefix::new(s3.clone(), &bucket, ""))).await.unwrap();
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
