//! The usage processor over the embedded store: real payload shapes, redeliveries, unknown and revoked
//! keys, and the property that counters equal the distinct events whatever the delivery order.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use std::collections::BTreeMap;

use common::*;
use meter_model::{Day, KeyId, KeyStore, ManualClock, Month, Tally, UsageReader};
use meter_realtime::lines::LineStats;
use meter_realtime::{ProcessError, RetryPolicy, UsageProcessor};
use meter_store::SqliteStore;
use proptest::prelude::*;

fn processor() -> UsageProcessor<SqliteStore, ManualClock> {
    UsageProcessor::new(
        SqliteStore::open_in_memory().unwrap(),
        ManualClock::new(at("2026-11-30T14:04:00Z")),
        RetryPolicy::default(),
    )
}

async fn totals(store: &SqliteStore, key: &str) -> Tally {
    store.get_key(&KeyId::parse(key).unwrap()).await.unwrap().unwrap().totals
}

#[tokio::test]
async fn the_fixture_delivery_is_counted_by_the_rules_once() {
    let processor = processor();
    seed_fixture_keys(processor.store()).await;
    let event = read_fixture("subscription-event.json");

    let report = processor.process_event(event.as_bytes()).await.unwrap();
    assert_eq!(
        report.lines,
        LineStats {
            log_events: 14,
            usage_events: 8,
            duplicates: 1,
            skipped: 3,
            rejected: 2,
            ..LineStats::default()
        }
    );
    assert_eq!(
        report.rejected_by_reason,
        BTreeMap::from([("invalid_statusCode".to_owned(), 1), ("malformed_json".to_owned(), 1)])
    );
    assert_eq!(report.unknown_key_events, 1);
    assert_eq!(report.keys_touched, 2);

    let again = processor.process_event(event.as_bytes()).await.unwrap();
    assert!(again.apply.was_duplicate());
    assert_eq!(again.keys_touched, 0, "a redelivery changes no key");

    let store = processor.store();
    assert_eq!(totals(store, KEY_A).await, Tally { successful_calls: 2, failed_calls: 2, usage_count: 5 });
    assert_eq!(
        totals(store, KEY_B).await,
        Tally { successful_calls: 1, failed_calls: 1, usage_count: 2 },
        "revoked keys count"
    );
    assert_eq!(store.get_key(&KeyId::parse(UNKNOWN).unwrap()).await.unwrap(), None);
    let a = KeyId::parse(KEY_A).unwrap();
    let november = store.month_usage(&a, Month::of(at("2026-11-30T00:00:00Z"))).await.unwrap();
    assert_eq!(november.len(), 1);
    assert_eq!(november[0].tally, Tally { successful_calls: 2, failed_calls: 1, usage_count: 4 });
    assert_eq!(november[0].last_used, Some(at("2026-11-30T23:59:59.999Z")));
    let december = store.month_usage(&a, Month::of(at("2026-12-01T00:00:00Z"))).await.unwrap();
    assert_eq!(december[0].day, "2026-12-01".parse::<Day>().unwrap());
    assert_eq!(december[0].tally, Tally { successful_calls: 0, failed_calls: 1, usage_count: 1 });
}

#[tokio::test]
async fn control_messages_change_nothing() {
    let processor = processor();
    let report = processor.process_event(read_fixture("subscription-control.json").as_bytes()).await.unwrap();
    assert_eq!(report.batch_id, None);
    assert_eq!(report.lines, LineStats::default());
}

#[tokio::test]
async fn undecodable_deliveries_are_not_retryable() {
    let processor = processor();
    for bad in [
        "{}",
        r#"{"awslogs":{"data":"***"}}"#,
        r#"{"awslogs":{"data":"bm90IGd6aXA="}}"#,
        r#"{"awslogs":{"data":"H4sIAAAAAAAA"}}"#,
    ] {
        let err = processor.process_event(bad.as_bytes()).await.unwrap_err();
        assert!(matches!(err, ProcessError::Undecodable(_)), "{bad}: {err:?}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn metrics_are_one_emf_line() {
    let processor = processor();
    seed_fixture_keys(processor.store()).await;
    let report = processor.process_event(read_fixture("subscription-event.json").as_bytes()).await.unwrap();
    let line: serde_json::Value =
        serde_json::from_str(&report.metrics("usage-processor", at("2026-11-30T14:04:00Z")).render())
            .unwrap();
    for (name, value) in
        [("EventsRead", 14), ("UsageEvents", 8), ("SkippedLines", 3), ("Rejected", 3), ("KeysTouched", 2)]
    {
        assert_eq!(line[name], value, "{name}");
    }
    assert_eq!(line["DuplicateBatches"], 0);
    assert!(line["ItemsWritten"].as_u64().unwrap() >= 5);
}

/// One generated request: (request index, key index, day offset, status, should count).
type Request = (usize, usize, i64, u16, bool);

fn requests() -> impl Strategy<Value = Vec<Request>> {
    proptest::collection::vec(
        (
            0usize..4,
            0i64..3,
            prop_oneof![Just(200u16), Just(204), Just(302), Just(404), Just(500)],
            any::<bool>(),
        ),
        1..60,
    )
    .prop_map(|v| v.into_iter().enumerate().map(|(i, (k, d, s, c))| (i, k, d, s, c)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any split of distinct requests into deliveries, any redeliveries, any order: the counters equal
    /// the counts computed directly from the distinct requests, and unknown keys get nothing.
    #[test]
    fn counters_equal_the_distinct_events(
        requests in requests(),
        batch_count in 1usize..6,
        order in proptest::collection::vec(0usize..100, 1..16),
    ) {
        let keys = [KEY_A, KEY_B, "0123456789ad", UNKNOWN];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let processor = processor();
            for key in &keys[..3] {
                processor.store().insert_key(&record(key)).await.unwrap();
            }
            let base = at("2026-11-29T23:59:59.000Z");
            let mut batches: Vec<Vec<String>> = vec![Vec::new(); batch_count];
            let mut expected: BTreeMap<&str, Tally> = BTreeMap::new();
            for &(i, k, d, status, count) in &requests {
                let ts = base + chrono::Duration::hours(d * 12) + chrono::Duration::milliseconds(i as i64);
                batches[i % batch_count].push(usage_line(&format!("req-{i}"), keys[k], ts, status, count));
                if k < 3 {
                    expected.entry(keys[k]).or_default().add(Tally::of_call(status, count));
                }
            }
            let events: Vec<String> = batches
                .iter()
                .enumerate()
                .map(|(b, lines)| subscription_event(&format!("stream-{b}"), (b as u64) * 1000, lines))
                .collect();
            // Every batch at least once, then the generated order, which repeats and reorders them.
            let sequence = (0..batch_count).chain(order.iter().map(|o| o % batch_count));
            for index in sequence.collect::<Vec<_>>().into_iter().rev() {
                processor.process_event(events[index].as_bytes()).await.unwrap();
            }
            for key in &keys[..3] {
                prop_assert_eq!(totals(processor.store(), key).await, expected.get(key).copied().unwrap_or_default(), "{}", key);
            }
            prop_assert_eq!(processor.store().get_key(&KeyId::parse(UNKNOWN).unwrap()).await.unwrap(), None);
            Ok(())
        })?;
    }
}
