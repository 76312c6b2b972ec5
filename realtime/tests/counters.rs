//! The realtime counters over the embedded store, fed as the deployed transformer feeds them: real
//! payload shapes cut into Firehose invocations, redeliveries, unknown and revoked keys, a store that
//! is down, and the property that the day items equal the distinct events whatever the deliveries,
//! redeliveries, order and buffer cuts.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::*;
use meter_model::{
    ApplyReport, BatchDelta, CounterCorrector, Day, KeyId, KeyStore, ManualClock, Month, StoreError, Tally,
    UsageReader, UsageTotals, UsageWriter,
};
use meter_realtime::lines::LineStats;
use meter_realtime::{Buffering, LocalRealtime, RealtimeCounters, RetryPolicy};
use meter_store::SqliteStore;
use proptest::prelude::*;

fn clock() -> ManualClock {
    ManualClock::new(at("2026-11-30T14:04:00Z"))
}

fn local(store: &SqliteStore, buffering: Buffering) -> LocalRealtime<&SqliteStore, ManualClock> {
    LocalRealtime::new(RealtimeCounters::new(store, clock(), RetryPolicy::default()), buffering)
}

async fn lifetime(store: &SqliteStore, key: &str) -> Tally {
    UsageTotals::of_days(&store.lifetime_usage(&KeyId::parse(key).unwrap()).await.unwrap()).tally
}

#[tokio::test]
async fn the_fixture_delivery_is_counted_by_the_rules_once_even_when_it_arrives_twice() {
    let store = SqliteStore::open_in_memory().unwrap();
    seed_fixture_keys(&store).await;
    let event = read_fixture("subscription-event.json");
    let mut run = local(&store, Buffering::DEPLOYED);
    run.add_event(event.as_bytes(), None, "first").await;
    run.invoke().await;
    run.add_event(event.as_bytes(), None, "again").await;
    let totals = run.finish().await;

    assert_eq!(
        totals.lines,
        LineStats {
            log_events: 28,
            usage_events: 16,
            duplicates: 2,
            skipped: 6,
            rejected: 4,
            ..LineStats::default()
        },
        "both arrivals were read"
    );
    assert_eq!(
        totals.rejected_by_reason,
        BTreeMap::from([("invalid_statusCode".to_owned(), 2), ("malformed_json".to_owned(), 2)])
    );
    assert_eq!(totals.invocations, 2);
    let apply = &totals.counters.apply;
    assert_eq!((apply.deliveries_applied, apply.deliveries_already_applied), (1, 1));
    assert_eq!(totals.counters.unknown_key_events(), 1, "the second arrival never reached the keys");

    assert_eq!(lifetime(&store, KEY_A).await, Tally { successful_calls: 2, failed_calls: 2, usage_count: 5 });
    assert_eq!(
        lifetime(&store, KEY_B).await,
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
async fn control_messages_and_undecodable_deliveries_count_nothing_and_stop_nothing() {
    let store = SqliteStore::open_in_memory().unwrap();
    seed_fixture_keys(&store).await;
    let mut run = local(&store, Buffering::DEPLOYED);
    run.add_event(read_fixture("subscription-control.json").as_bytes(), None, "control").await;
    for bad in ["{}", r#"{"awslogs":{"data":"***"}}"#, r#"{"awslogs":{"data":"bm90IGd6aXA="}}"#] {
        run.add_event(bad.as_bytes(), None, bad).await;
    }
    run.add_event(read_fixture("subscription-event.json").as_bytes(), None, "good").await;
    let totals = run.finish().await;
    assert_eq!(totals.control_messages, 1);
    assert_eq!(totals.undecodable.len(), 3, "{:?}", totals.undecodable);
    assert_eq!(totals.counters.apply.deliveries_applied, 1);
    assert_eq!(lifetime(&store, KEY_A).await.usage_count, 5);
}

/// A store that is down: every call fails as an unreachable DynamoDB would.
struct Down;

impl UsageWriter for Down {
    async fn apply_deliveries(&self, _: &[BatchDelta], _: DateTime<Utc>) -> Result<ApplyReport, StoreError> {
        Err(StoreError::Unavailable {
            operation: "apply deliveries".into(),
            hint: "down".into(),
            source: None,
        })
    }
}

#[tokio::test]
async fn a_store_that_is_down_is_retried_then_reported_never_raised() {
    let quick = RetryPolicy::new(3, std::time::Duration::from_millis(1), std::time::Duration::from_millis(1));
    let counters = RealtimeCounters::new(Down, clock(), quick);
    let mut run = LocalRealtime::new(counters, Buffering::DEPLOYED);
    run.add_event(read_fixture("subscription-event.json").as_bytes(), None, "fixture").await;
    let totals = run.finish().await;
    assert_eq!(totals.counters.attempts, 3);
    assert_eq!(totals.counters.apply.not_applied.usage_count, 8, "every usage event of the delivery");
    assert!(totals.counters.apply.failure.as_deref().unwrap().contains("down"));
    let line: serde_json::Value = serde_json::from_str(
        &totals
            .counters
            .metrics(meter_realtime::metrics::MetricLine::new("t", at("2026-11-30T14:04:00Z")))
            .render(),
    )
    .unwrap();
    assert_eq!(line["CounterEventsNotApplied"], 8);
    assert_eq!(line["KeyItemsWritten"], 0, "a store that refused the call wrote nothing");
}

#[tokio::test]
async fn deliveries_are_cut_into_invocations_by_size_and_by_time() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.insert_key(&record(KEY_A)).await.unwrap();
    let base = at("2026-11-30T10:00:00Z");
    let mut run = local(&store, Buffering { max_bytes: 1 << 20, max_age: chrono::Duration::seconds(30) });
    for second in 0..120 {
        let ts = base + chrono::Duration::seconds(second);
        let line = usage_line(&format!("r{second}"), KEY_A, ts, 200, true);
        run.add_event(subscription_event("s", u64::try_from(second).unwrap(), &[line]).as_bytes(), None, "t")
            .await;
    }
    let totals = run.finish().await;
    assert_eq!(totals.invocations, 4, "one per 30 s of arrivals");
    let apply = &totals.counters.apply;
    assert_eq!(
        (apply.key_days_written, apply.key_writes),
        (4, 4),
        "one write of the key's day per invocation, not per delivery"
    );
    assert_eq!(apply.keys_read, 1, "the key is read once");
    assert_eq!(lifetime(&store, KEY_A).await.successful_calls, 120);
    assert!(totals.billed_record_bytes == 120 * 5 * 1024, "each small record billed as 5 KB");
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

    /// Any split of distinct requests into deliveries, any redeliveries, any order, any cut into
    /// invocations: the day items equal the counts computed directly from the distinct requests, and
    /// unknown keys get nothing.
    #[test]
    fn counters_equal_the_distinct_events(
        requests in requests(),
        batch_count in 1usize..6,
        order in proptest::collection::vec(0usize..100, 1..16),
        buffer_bytes in 200u64..4_000,
    ) {
        let keys = [KEY_A, KEY_B, "0123456789ad", UNKNOWN];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = SqliteStore::open_in_memory().unwrap();
            for key in &keys[..3] {
                store.insert_key(&record(key)).await.unwrap();
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
            let mut run = local(&store, Buffering { max_bytes: buffer_bytes, max_age: chrono::Duration::hours(1) });
            // Every batch at least once, then the generated order, which repeats and reorders them.
            let sequence = (0..batch_count).chain(order.iter().map(|o| o % batch_count));
            for index in sequence.collect::<Vec<_>>().into_iter().rev() {
                run.add_event(events[index].as_bytes(), None, "generated").await;
            }
            let totals = run.finish().await;
            prop_assert!(totals.counters.apply.failure.is_none());
            for key in &keys[..3] {
                prop_assert_eq!(lifetime(&store, key).await, expected.get(key).copied().unwrap_or_default(), "{}", key);
            }
            // The key items' own totals: what was written directly at once, parked usage after a refresh.
            store.refresh_parked_totals().await.unwrap();
            for key in &keys[..3] {
                let item = store.get_key(&KeyId::parse(key).unwrap()).await.unwrap().unwrap();
                prop_assert_eq!(item.totals, expected.get(key).copied().unwrap_or_default(), "{} key totals", key);
            }
            prop_assert_eq!(store.get_key(&KeyId::parse(UNKNOWN).unwrap()).await.unwrap(), None);
            Ok(())
        })?;
    }
}

/// Feeds `deliveries` to a counters run and an archive run; each record is read once for both when
/// `read_once`, as the demo does, or by each consumer itself. Returns what both did, and where.
async fn both_runs(
    sim: &meter_sim::traffic::Simulator,
    deliveries: &[meter_sim::traffic::Delivery],
    read_once: bool,
) -> (meter_realtime::RealtimeTotals, meter_realtime::ArchiveSummary, BTreeMap<(String, Day), Tally>) {
    let store = SqliteStore::open_in_memory().unwrap();
    for key in sim.keys() {
        store.insert_key(&record(&key.id)).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut archiver = meter_realtime::Archiver::new(
        meter_archive::Archive::new(meter_store::LocalDir::new(dir.path())),
        1000,
    );
    let mut run = local(&store, Buffering::DEPLOYED);
    // A control message and a record that is not gzip go through both ways too.
    let control = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        serde_json::from_str::<serde_json::Value>(&read_fixture("subscription-control.json")).unwrap()["awslogs"]
            ["data"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let records = deliveries
        .iter()
        .map(|d| (d.record.clone(), Some(d.arrives_at)))
        .chain([(control, None), (b"not gzip".to_vec(), None)]);
    for (record, arrives_at) in records {
        if read_once {
            let mut read = meter_realtime::ReadRecord::read(&record);
            run.add_read(&mut read, arrives_at, "test").await;
            archiver.add_read(read, "test").await.unwrap();
        } else {
            run.add_record(&record, arrives_at, "test").await;
            archiver.add_compressed(&record, "test").await.unwrap();
        }
    }
    let mut totals = run.finish().await;
    // How long the store took is not what is compared.
    totals.counters.duration = std::time::Duration::ZERO;
    let mut summary = archiver.finish().await.unwrap();
    // The files are named alike either way; only the directory differs.
    summary.files = summary.files.iter().map(|f| f.replace(&dir.path().display().to_string(), "")).collect();
    let items = store
        .day_items("2026-10-01".parse::<Day>().unwrap(), "2026-12-31".parse::<Day>().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|item| ((item.key_id.to_string(), item.day), item.tally))
        .collect();
    (totals, summary, items)
}

#[tokio::test]
async fn a_record_read_once_for_counters_and_archive_counts_and_archives_as_read_by_each() {
    use meter_sim::traffic::{Faults, Profile, SimConfig, Simulator};
    // Ten minutes of the small reference traffic with the heavy faults: malformed lines, unknown keys,
    // redeliveries, late calls.
    let profile = Profile::named("small").unwrap();
    let config = SimConfig::steady(
        profile,
        1,
        "2026-11".parse::<Month>().unwrap(),
        7,
        Faults::preset("heavy").unwrap(),
    );
    let mut sim = Simulator::new(config);
    let mut deliveries = Vec::new();
    while let Some((_, slice)) = sim.next_slice() {
        deliveries.extend(slice);
    }
    let (totals_twice, archive_twice, items_twice) = both_runs(&sim, &deliveries, false).await;
    let (totals_once, archive_once, items_once) = both_runs(&sim, &deliveries, true).await;
    assert!(
        archive_twice.lines.rejected > 0 && deliveries.iter().any(|d| d.is_redelivery),
        "the faults reach both paths: {:?}",
        archive_twice.lines
    );
    assert_eq!(items_once, items_twice);
    assert_eq!(format!("{totals_once:?}"), format!("{totals_twice:?}"));
    assert_eq!(format!("{archive_once:?}"), format!("{archive_twice:?}"));
}
