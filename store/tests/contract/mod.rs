//! The store contract: what every adapter of the ports must do, run against each of them.
//!
//! A backend's test file calls [`contract_suite!`] with an async constructor of a fresh, empty store
//! and an async function that seeds a `UsageCounters` day item (the write ports arrive with the
//! realtime and reconcile stages; the read side is checked here).

use chrono::{DateTime, Duration, Utc};
use meter_model::quota::{QuotaMode, QuotaTerms};
use meter_model::time::{Month, parse_instant};
use meter_model::{
    ApiKey, ApiKeyRecord, BatchDelta, BatchId, CounterCorrector, DayDelta, DayUsage, Email, HashedKey,
    KeyChange, KeyId, KeyStatus, KeyStore, KeyTerms, MarkerSlot, NewKey, PlanName, QuotaLedger, StoreError,
    Tally, UsageReader, UsageTotals, UsageWriter,
};

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    parse_instant(text).unwrap()
}

pub(crate) fn new_record(email: &str, plan: Option<&str>) -> ApiKeyRecord {
    let key = ApiKey::generate().unwrap();
    ApiKeyRecord::new(NewKey {
        id: key.id().clone(),
        hashed_key: key.hashed(),
        user_email: Email::parse(email).unwrap(),
        plan: plan.map(|p| PlanName::parse(p).unwrap()),
        name: plan.map(|p| format!("{p} key")),
        created_at: at("2026-11-01T09:30:00.250Z"),
    })
}

pub(crate) async fn insert_then_get_round_trips<S: KeyStore>(store: &S) {
    let plain = new_record("ada@example.com", None);
    let mut full = new_record("grace@example.com", Some("pro"));
    full.last_used = Some(at("2026-11-02T10:00:00.001Z"));
    full.totals = Tally { successful_calls: 7, failed_calls: 2, usage_count: 11 };
    for record in [&plain, &full] {
        store.insert_key(record).await.unwrap();
        assert_eq!(store.get_key(&record.id).await.unwrap().as_ref(), Some(record));
    }
}

pub(crate) async fn insert_refuses_a_taken_id<S: KeyStore>(store: &S) {
    let first = new_record("ada@example.com", None);
    store.insert_key(&first).await.unwrap();
    let mut second = new_record("mallory@example.com", None);
    second.id = first.id.clone();
    let err = store.insert_key(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get_key(&first.id).await.unwrap(), Some(first), "the first key must be untouched");
}

pub(crate) async fn unknown_ids_and_hashes_are_absent<S: KeyStore>(store: &S) {
    store.insert_key(&new_record("ada@example.com", None)).await.unwrap();
    assert_eq!(store.get_key(&KeyId::parse("zzzzzzzzzzzz").unwrap()).await.unwrap(), None);
    assert_eq!(store.find_key_by_hash(&HashedKey::of("mk_nope")).await.unwrap(), None);
}

pub(crate) async fn finds_keys_by_hash<S: KeyStore>(store: &S) {
    let ours = new_record("ada@example.com", None);
    // An imported key: another format, an id of its own, found only through its hash.
    let mut imported = new_record("legacy@example.com", Some("legacy"));
    imported.id = KeyId::parse("legacy-000042").unwrap();
    imported.hashed_key = HashedKey::of("sk_live_0123456789abcdef");
    for record in [&ours, &imported] {
        store.insert_key(record).await.unwrap();
    }
    assert_eq!(store.find_key_by_hash(&ours.hashed_key).await.unwrap(), Some(ours));
    assert_eq!(
        store.find_key_by_hash(&HashedKey::of("sk_live_0123456789abcdef")).await.unwrap(),
        Some(imported)
    );
}

pub(crate) async fn lists_every_key_in_id_order<S: KeyStore>(store: &S) {
    let mut records: Vec<ApiKeyRecord> = (0u32..25)
        .map(|i| new_record(&format!("user{i}@example.com"), i.is_multiple_of(3).then_some("pro")))
        .collect();
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.list_keys().await.unwrap(), records);
}

pub(crate) async fn revocation_marks_the_key_and_moves_the_epoch<S: KeyStore>(store: &S) {
    let record = new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    assert_eq!(store.revocation_epoch().await.unwrap(), 0);

    let first = store.revoke_key(&record.id, at("2026-11-03T08:00:00Z")).await.unwrap();
    assert!(!first.was_already_revoked);
    assert_eq!(first.epoch, 1);
    assert_eq!(first.record.status, KeyStatus::Revoked);
    assert_eq!(first.record.revoked_at, Some(at("2026-11-03T08:00:00Z")));
    assert_eq!(store.revocation_epoch().await.unwrap(), 1);
    assert_eq!(store.get_key(&record.id).await.unwrap(), Some(first.record.clone()));

    // Revoking again is harmless: the first revocation time stays, and the epoch does not move (a move
    // makes every warm authorizer drop its whole cache, for nothing).
    let again = store.revoke_key(&record.id, at("2026-11-04T08:00:00Z")).await.unwrap();
    assert!(again.was_already_revoked);
    assert_eq!(again.epoch, 1);
    assert_eq!(store.revocation_epoch().await.unwrap(), 1);
    assert_eq!(again.record.revoked_at, Some(at("2026-11-03T08:00:00Z")));
    // Everything else about the key is as it was.
    let mut expected = record.clone();
    expected.status = KeyStatus::Revoked;
    expected.revoked_at = Some(at("2026-11-03T08:00:00Z"));
    assert_eq!(again.record, expected);
}

pub(crate) async fn revoking_an_unknown_key_changes_nothing<S: KeyStore>(store: &S) {
    let err = store.revoke_key(&KeyId::parse("zzzzzzzzzzzz").unwrap(), Utc::now()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(store.revocation_epoch().await.unwrap(), 0);
    assert!(store.list_keys().await.unwrap().is_empty());
}

pub(crate) async fn concurrent_revocations_each_move_the_epoch<S: KeyStore>(store: &S) {
    let records: Vec<_> = (0..8).map(|i| new_record(&format!("u{i}@example.com"), None)).collect();
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let revocations = records.iter().map(|r| store.revoke_key(&r.id, at("2026-11-05T00:00:00Z")));
    let results = futures::future::join_all(revocations).await;
    let mut epochs: Vec<u64> = results.into_iter().map(|r| r.unwrap().epoch).collect();
    epochs.sort_unstable();
    assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "every revocation gets its own epoch");
    assert_eq!(store.revocation_epoch().await.unwrap(), 8);
}

pub(crate) fn day_item(key: &KeyId, day: &str, n: u64) -> DayUsage {
    DayUsage {
        key_id: key.clone(),
        day: day.parse().unwrap(),
        tally: Tally { successful_calls: n, failed_calls: n / 2, usage_count: n * 2 },
        open: Tally::default(),
        last_used: Some(
            at(&format!("{day}T12:00:00.000Z")) + Duration::milliseconds(i64::try_from(n).unwrap()),
        ),
        reconciled_at: n.is_multiple_of(2).then(|| at("2026-12-02T03:00:00Z")),
    }
}

pub(crate) async fn month_usage_reads_one_key_and_month<S, F, Fut>(store: &S, seed: F)
where
    S: UsageReader,
    F: Fn(DayUsage) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let key = KeyId::parse("0123456789ab").unwrap();
    let other = KeyId::parse("0123456789ac").unwrap();
    let november = ["2026-11-30", "2026-11-01", "2026-11-15"];
    for (n, day) in (1..).zip(november) {
        seed(day_item(&key, day, n)).await;
    }
    seed(day_item(&key, "2026-10-31", 100)).await;
    seed(day_item(&key, "2026-12-01", 200)).await;
    seed(day_item(&other, "2026-11-15", 300)).await;

    let got = store.month_usage(&key, "2026-11".parse().unwrap()).await.unwrap();
    let expected = vec![
        day_item(&key, "2026-11-01", 2),
        day_item(&key, "2026-11-15", 3),
        day_item(&key, "2026-11-30", 1),
    ];
    assert_eq!(got, expected);
    assert!(store.month_usage(&key, "2026-09".parse().unwrap()).await.unwrap().is_empty());
}

pub(crate) fn delta(key: &KeyId, instant: &str, status: u16, should_count: bool, calls: u64) -> DayDelta {
    let mut tally = Tally::default();
    for _ in 0..calls {
        tally.add(Tally::of_call(status, should_count));
    }
    let last_used = at(instant);
    DayDelta { key_id: key.clone(), day: meter_model::Day::of(last_used), tally, last_used }
}

/// A delivery whose marker lives in the slot of its first delta's minute (stream shard 0).
pub(crate) fn batch_of(id: u8, deltas: Vec<DayDelta>) -> BatchDelta {
    let first = deltas.iter().map(|d| d.last_used).min().unwrap_or_default();
    BatchDelta::new(BatchId::from_digest(&[id; 32]), MarkerSlot::of(first, 0), deltas)
}

async fn day_totals<S: UsageReader>(store: &S, id: &KeyId) -> (Tally, Option<DateTime<Utc>>) {
    let days = store.lifetime_usage(id).await.unwrap();
    let totals = meter_model::UsageTotals::of_days(&days);
    (totals.tally, totals.last_used)
}

pub(crate) async fn a_delivery_adds_to_its_days_exactly_once<S: KeyStore + UsageWriter + UsageReader>(
    store: &S,
) {
    let record = new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    let key = &record.id;
    // A delivery that straddles midnight: two day items.
    let batch = batch_of(
        1,
        vec![
            delta(key, "2026-11-30T23:59:59.999Z", 200, true, 3),
            delta(key, "2026-11-30T23:59:58.000Z", 503, true, 2),
            delta(key, "2026-12-01T00:00:00.000Z", 201, false, 4),
        ],
    );
    let first =
        store.apply_deliveries(std::slice::from_ref(&batch), at("2026-12-01T00:00:30Z")).await.unwrap();
    assert_eq!((first.deliveries_applied, first.deliveries_already_applied), (1, 0), "{first:?}");
    assert_eq!(
        (first.marker_writes, first.key_days_written, first.key_writes, first.keys_read),
        (1, 2, 1, 1),
        "both days in one write of the key: {first:?}"
    );
    assert!(first.unknown_keys.is_empty() && first.failure.is_none());
    // The same delivery again, alone or beside a new one in the same slot: counted once.
    let other = batch_of(2, vec![delta(key, "2026-11-30T23:59:59.500Z", 200, true, 1)]);
    let again = store
        .apply_deliveries(&[batch.clone(), other, batch.clone()], at("2026-12-01T01:00:00Z"))
        .await
        .unwrap();
    assert_eq!((again.deliveries_applied, again.deliveries_already_applied), (1, 2), "{again:?}");
    assert_eq!(again.marker_writes, 1, "one marker write for the slot's deliveries");
    assert_eq!(again.keys_read, 0, "a key once found is known");

    let (totals, last_used) = day_totals(store, key).await;
    assert_eq!(totals, Tally { successful_calls: 4, failed_calls: 2, usage_count: 10 });
    assert_eq!(last_used, Some(at("2026-12-01T00:00:00.000Z")));
    let november = store.month_usage(key, "2026-11".parse().unwrap()).await.unwrap();
    assert_eq!(november.len(), 1);
    assert_eq!(november[0].tally, Tally { successful_calls: 4, failed_calls: 2, usage_count: 6 });
    assert_eq!(november[0].last_used, Some(at("2026-11-30T23:59:59.999Z")));
    let december = store.month_usage(key, "2026-12".parse().unwrap()).await.unwrap();
    assert_eq!(december[0].tally, Tally { successful_calls: 0, failed_calls: 0, usage_count: 4 });
    // The key's lifetime totals move with its days, in the same write.
    let stored = store.get_key(key).await.unwrap().unwrap();
    assert_eq!((stored.totals, stored.last_used), (totals, last_used));
    assert_eq!((first.key_writes, again.key_writes), (1, 1));
    // Nothing is reconciled yet: the days are open whole.
    assert_eq!(november[0].open, november[0].tally);
}

pub(crate) async fn unknown_keys_get_no_items_and_revoked_keys_still_count<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader,
{
    let revoked = new_record("ada@example.com", None);
    store.insert_key(&revoked).await.unwrap();
    store.revoke_key(&revoked.id, at("2026-11-02T00:00:00Z")).await.unwrap();
    let unknown = KeyId::parse("unknown00000").unwrap();
    let batch = batch_of(
        2,
        vec![
            delta(&revoked.id, "2026-11-01T10:00:00Z", 200, true, 2),
            delta(&unknown, "2026-11-01T10:00:00Z", 200, true, 5),
        ],
    );
    let report = store.apply_deliveries(&[batch], at("2026-11-01T10:01:00Z")).await.unwrap();
    assert_eq!(
        report.unknown_keys.into_iter().collect::<Vec<_>>(),
        vec![(unknown.clone(), Tally { successful_calls: 5, failed_calls: 0, usage_count: 5 })]
    );
    assert_eq!(day_totals(store, &revoked.id).await.0.successful_calls, 2, "usage before revocation counts");
    assert_eq!(store.get_key(&unknown).await.unwrap(), None, "no key item is created");
    assert!(store.month_usage(&unknown, "2026-11".parse().unwrap()).await.unwrap().is_empty());
    assert_eq!(store.list_keys().await.unwrap().len(), 1);
    // An unknown key is looked up again next time: it may have been created meanwhile.
    let later = batch_of(3, vec![delta(&unknown, "2026-11-01T10:05:00Z", 200, true, 1)]);
    assert_eq!(store.apply_deliveries(&[later], at("2026-11-01T10:06:00Z")).await.unwrap().keys_read, 1);
}

pub(crate) async fn a_buffer_writes_each_key_day_once_and_costs_what_dynamodb_charges<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader,
{
    // 130 keys over two days, spread over 40 deliveries in 4 slots.
    let records: Vec<_> = (0..130).map(|i| new_record(&format!("u{i}@example.com"), None)).collect();
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let deliveries: Vec<BatchDelta> = (0..40u8)
        .map(|d| {
            let minute = ["2026-11-07T23:58", "2026-11-07T23:59", "2026-11-08T00:00", "2026-11-08T00:01"]
                [usize::from(d % 4)];
            let deltas = records
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 40 == usize::from(d) || i % 13 == usize::from(d % 13))
                .map(|(_, r)| {
                    delta(&r.id, &format!("{minute}:{:02}Z", d), if d % 3 == 0 { 404 } else { 200 }, true, 1)
                })
                .collect();
            batch_of(d + 10, deltas)
        })
        .collect();
    let expected_events: u64 = deliveries.iter().map(|d| d.total().usage_count).sum();
    let key_days = meter_model::batch::merge_days(&deliveries).len();
    let first = store.apply_deliveries(&deliveries, at("2026-11-08T00:02:00Z")).await.unwrap();
    assert_eq!(first.deliveries_applied, 40);
    assert_eq!(first.marker_writes, 4, "one marker write per slot");
    assert_eq!(first.marker_write_units, 4, "a slot of ten digests fits one write unit");
    assert_eq!(
        first.key_days_written + first.parked_entries,
        key_days,
        "one write per key and day, or parked"
    );
    assert!(first.parked_writes <= first.parked_entries, "parked key days share items");
    assert_eq!(first.keys_read, 130);
    assert!(
        first.key_writes > 0 && first.key_writes <= first.key_days_written.min(130),
        "at most one write per key, whatever its days: {first:?}"
    );
    assert_eq!(
        first.write_units(),
        4 + first.parked_write_units + (first.key_writes + first.key_last_used_rewrites) as u64
    );
    let again = store.apply_deliveries(&deliveries, at("2026-11-08T00:03:00Z")).await.unwrap();
    assert_eq!(
        (again.deliveries_applied, again.deliveries_already_applied, again.key_days_written),
        (0, 40, 0)
    );
    let mut counted = 0;
    for record in &records {
        counted += day_totals(store, &record.id).await.0.usage_count;
    }
    assert_eq!(counted, expected_events);
}

pub(crate) async fn last_used_never_moves_back<S: KeyStore + UsageWriter + UsageReader>(store: &S) {
    let record = new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    // Two calls each: a single call would be parked rather than written to the item.
    let later = batch_of(4, vec![delta(&record.id, "2026-11-09T12:00:00Z", 200, true, 2)]);
    let earlier = batch_of(5, vec![delta(&record.id, "2026-11-09T08:00:00Z", 200, true, 2)]);
    store.apply_deliveries(&[later], at("2026-11-09T12:00:10Z")).await.unwrap();
    let report = store.apply_deliveries(&[earlier], at("2026-11-09T12:00:20Z")).await.unwrap();
    assert_eq!(report.key_last_used_rewrites, 1, "the conditional write is repeated without lastUsed");
    assert_eq!(report.write_units(), 1 + 2);
    let key = store.get_key(&record.id).await.unwrap().unwrap();
    assert_eq!((key.totals.usage_count, key.last_used), (4, Some(at("2026-11-09T12:00:00Z"))));
    let days = store.month_usage(&record.id, "2026-11".parse().unwrap()).await.unwrap();
    assert_eq!(days[0].tally.successful_calls, 4);
    assert_eq!(days[0].last_used, Some(at("2026-11-09T12:00:00Z")));
    // A buffer with an earlier call of that day and a call of the next: the key's lastUsed moves,
    // that day's stays.
    let straddling = batch_of(
        6,
        vec![
            delta(&record.id, "2026-11-09T09:00:00Z", 200, true, 2),
            delta(&record.id, "2026-11-10T00:30:00Z", 200, true, 2),
        ],
    );
    store.apply_deliveries(&[straddling], at("2026-11-10T00:31:00Z")).await.unwrap();
    let days = store.month_usage(&record.id, "2026-11".parse().unwrap()).await.unwrap();
    let last_used: Vec<_> = days.iter().map(|d| (d.day.to_string(), d.last_used)).collect();
    assert_eq!(
        last_used,
        [
            ("2026-11-09".to_owned(), Some(at("2026-11-09T12:00:00Z"))),
            ("2026-11-10".to_owned(), Some(at("2026-11-10T00:30:00Z")))
        ]
    );
}

/// `n` new keys whose parked usage shares one bucket.
fn records_in_one_bucket(n: usize) -> Vec<ApiKeyRecord> {
    let mut buckets: std::collections::HashMap<u64, Vec<ApiKeyRecord>> = std::collections::HashMap::new();
    loop {
        let record = new_record("p@example.com", None);
        let bucket = buckets.entry(meter_model::batch::pending_bucket(&record.id)).or_default();
        bucket.push(record);
        if bucket.len() == n {
            return std::mem::take(bucket);
        }
    }
}

pub(crate) async fn single_calls_are_parked_read_with_the_days_and_cleared<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader + CounterCorrector,
{
    let records = records_in_one_bucket(5);
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let (a, b) = (&records[0].id, &records[1].id);
    // A single call of each key on the 9th, a second call of `b` that day, and one of `a` on the 10th.
    let deliveries = [
        batch_of(30, records.iter().map(|r| delta(&r.id, "2026-11-09T08:00:00Z", 200, true, 1)).collect()),
        batch_of(
            31,
            vec![
                delta(a, "2026-11-10T08:00:00Z", 500, true, 1),
                delta(b, "2026-11-09T08:00:01Z", 404, true, 1),
            ],
        ),
    ];
    let report = store.apply_deliveries(&deliveries, at("2026-11-10T08:01:00Z")).await.unwrap();
    // b's two calls on the 9th are written, as is a's lone call on the 10th (too few to park in its
    // bucket that day); the four single calls of the 9th share one parked item.
    assert_eq!(
        (report.key_days_written, report.parked_entries, report.parked_writes),
        (2, 4, 1),
        "{report:?}"
    );
    let november = store.month_usage(a, "2026-11".parse().unwrap()).await.unwrap();
    assert_eq!(
        november.iter().map(|d| d.tally.usage_count).collect::<Vec<_>>(),
        [1, 1],
        "parked days read in"
    );
    assert_eq!(november[1].last_used, Some(at("2026-11-10T08:00:00Z")));
    assert_eq!(day_totals(store, b).await.0.usage_count, 2);
    let (from, to) = ("2026-11-09".parse().unwrap(), "2026-11-10".parse().unwrap());
    let parked = store.parked_usage(from, to).await.unwrap();
    assert_eq!((parked.entries.len(), parked.handles.len()), (4, 1));
    // A reconcile takes what was parked by its start: the item was parked when the buffer was applied.
    let until = |text: &str| store.parked_usage_until(from, to, Some(at(text)));
    assert_eq!(until("2026-11-10T08:01:00Z").await.unwrap().handles.len(), 1, "parked at the instant");
    assert!(until("2026-11-10T08:00:59Z").await.unwrap().handles.is_empty(), "parked after it");
    assert_eq!(store.day_items(from, to).await.unwrap().len(), 2, "parked usage is not an item");
    assert_eq!(
        store.refresh_key_totals(a).await.unwrap().unwrap().tally.usage_count,
        1,
        "a recount counts the parked usage the key's snapshot holds: none before a refresh"
    );
    store.refresh_parked_totals().await.unwrap();
    assert_eq!(store.refresh_key_totals(a).await.unwrap().unwrap().tally.usage_count, 2);
    store.clear_parked(&parked.handles).await.unwrap();
    assert!(store.parked_usage(from, to).await.unwrap().entries.is_empty());
    assert_eq!(day_totals(store, a).await.0.usage_count, 1, "cleared: reconcile sets the items meanwhile");
}

pub(crate) async fn marks_expire_by_when_they_were_written_not_by_their_events<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader,
{
    // Events a month old (a replay, or the demo's clock after the month) are still recognised when
    // they arrive again days later: a mark lives from when it was written.
    let record = new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    let old = batch_of(8, vec![delta(&record.id, "2026-10-01T10:00:00Z", 200, true, 1)]);
    store.apply_deliveries(std::slice::from_ref(&old), at("2026-11-01T10:00:00Z")).await.unwrap();
    let again = store.apply_deliveries(&[old], at("2026-11-05T10:00:00Z")).await.unwrap();
    assert_eq!((again.deliveries_applied, again.deliveries_already_applied), (0, 1));
    assert_eq!(day_totals(store, &record.id).await.0.usage_count, 1);
}

pub(crate) async fn key_totals_are_refreshed_from_the_day_items<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader + CounterCorrector,
{
    let record = new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    let deliveries = [
        batch_of(6, vec![delta(&record.id, "2026-10-31T10:00:00Z", 200, true, 2)]),
        batch_of(7, vec![delta(&record.id, "2026-11-09T08:00:00Z", 500, true, 3)]),
    ];
    store.apply_deliveries(&deliveries, at("2026-11-09T12:00:20Z")).await.unwrap();
    let refreshed = store.refresh_key_totals(&record.id).await.unwrap().unwrap();
    let expected = Tally { successful_calls: 2, failed_calls: 3, usage_count: 5 };
    assert_eq!(refreshed.tally, expected);
    let stored = store.get_key(&record.id).await.unwrap().unwrap();
    assert_eq!((stored.totals, stored.last_used), (expected, Some(at("2026-11-09T08:00:00Z"))));
    // Setting, not adding: a second refresh changes nothing.
    store.refresh_key_totals(&record.id).await.unwrap();
    assert_eq!(store.get_key(&record.id).await.unwrap().unwrap().totals, expected);
    assert_eq!(store.refresh_key_totals(&KeyId::parse("unknown00000").unwrap()).await.unwrap(), None);
}

pub(crate) async fn key_totals_follow_every_write<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader + CounterCorrector,
{
    // Five keys of one bucket: `hot` calls three times in the buffer (written to its day item), the
    // other four once each (parked).
    let records = records_in_one_bucket(5);
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let (hot, single) = (&records[0].id, &records[1].id);
    let mut calls = vec![delta(hot, "2026-11-09T08:00:05Z", 200, true, 3)];
    calls.extend(records[1..].iter().map(|r| delta(&r.id, "2026-11-09T08:00:00Z", 200, true, 1)));
    let report = store.apply_deliveries(&[batch_of(40, calls)], at("2026-11-09T08:01:00Z")).await.unwrap();
    assert_eq!((report.key_days_written, report.parked_entries, report.key_writes), (1, 4, 1));
    let totals = |id: KeyId| async move {
        let key = store.get_key(&id).await.unwrap().unwrap();
        (key.totals.usage_count, key.last_used)
    };
    // Written directly: in the key's totals with the same write.
    assert_eq!(totals(hot.clone()).await, (3, Some(at("2026-11-09T08:00:05Z"))));
    // Parked: in them from the next refresh on, which repeated moves nothing.
    assert_eq!(totals(single.clone()).await, (0, None));
    // A refresh moves each parked key once; the next finds nothing to move (racing refreshes:
    // `concurrent_parked_refreshes_move_each_key_once`).
    let one = store.refresh_parked_totals().await.unwrap();
    assert_eq!((one.parked_items, one.keys_parked, one.keys_moved), (1, 4, 4), "{one:?}");
    assert_eq!(totals(single.clone()).await, (1, Some(at("2026-11-09T08:00:00Z"))));
    assert_eq!(store.refresh_parked_totals().await.unwrap().keys_moved, 0);
    // A change of the key's terms keeps what its totals hold.
    let renamed = KeyChange { name: Some(Some("renamed".into())), ..KeyChange::default() };
    store.update_key(single, &renamed).await.unwrap();
    assert_eq!(store.refresh_parked_totals().await.unwrap().keys_moved, 0);
    assert_eq!(totals(single.clone()).await.0, 1);
    // ... and its open days (on DynamoDB they live on the key item the change rewrites).
    store.update_key(hot, &renamed).await.unwrap();
    let day = "2026-11-09".parse().unwrap();
    let open = store.day_item(hot, day).await.unwrap().unwrap();
    let three = Tally { successful_calls: 3, failed_calls: 0, usage_count: 3 };
    assert_eq!((open.tally, open.open, open.reconciled_at), (three, three, None));

    // Reconcile: a correction moves the key with its item and closes the day's open usage; folding
    // parked usage into the item and clearing it leaves the key's totals exact after the refresh
    // that follows.
    let correction =
        |key_id: &KeyId, expected: Option<Tally>, open: Tally, target: Tally| meter_model::DayCorrection {
            key_id: key_id.clone(),
            day,
            expected,
            expected_open: open,
            target,
            at: at("2026-11-10T03:00:00Z"),
            last_used: None,
            folded_until: None,
        };
    let five = Tally { successful_calls: 5, failed_calls: 0, usage_count: 5 };
    let one = Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 };
    let none = Tally::default();
    // A correction that read the day's open usage wrong is refused: the day moved since.
    let stale = store.correct_day(&correction(hot, Some(three), none, five)).await.unwrap();
    assert_eq!(stale, meter_model::CorrectionOutcome::Changed);
    let applied = store.correct_day(&correction(hot, Some(three), three, five)).await.unwrap();
    assert_eq!(applied, meter_model::CorrectionOutcome::Applied);
    assert_eq!(totals(hot.clone()).await.0, 5);
    let closed = store.day_item(hot, day).await.unwrap().unwrap();
    assert_eq!((closed.tally, closed.open), (five, none), "set from the archive, nothing open");
    assert!(closed.reconciled_at.is_some());
    // Realtime usage after the run is open again, on top of the reconciled count.
    let later = batch_of(41, vec![delta(hot, "2026-11-09T23:00:00Z", 200, true, 2)]);
    store.apply_deliveries(&[later], at("2026-11-09T23:01:00Z")).await.unwrap();
    let reopened = store.day_item(hot, day).await.unwrap().unwrap();
    let two = Tally { successful_calls: 2, failed_calls: 0, usage_count: 2 };
    assert_eq!((reopened.tally.usage_count, reopened.open), (7, two));
    assert_eq!(totals(hot.clone()).await.0, 7);
    let parked = store.parked_usage(day, day).await.unwrap();
    for record in &records[1..] {
        store.correct_day(&correction(&record.id, None, none, one)).await.unwrap();
    }
    store.clear_parked(&parked.handles).await.unwrap();
    let refresh = store.refresh_parked_totals().await.unwrap();
    assert_eq!((refresh.keys_parked, refresh.keys_moved), (0, 4), "{refresh:?}");
    for record in &records[1..] {
        assert_eq!(totals(record.id.clone()).await.0, 1, "folded once, counted once");
    }
    // The totals always equal what a recount finds.
    for record in &records {
        let kept = store.get_key(&record.id).await.unwrap().unwrap().totals;
        assert_eq!(store.refresh_key_totals(&record.id).await.unwrap().unwrap().tally, kept);
    }
}

/// Two parked refreshes at once (the schedule's and a run's): each key moves once, whichever wins,
/// because each write is conditional on the snapshot it replaces. Run on SQLite only: the emulator
/// applies a DynamoDB condition and its write without a lock, so two racing requests can both pass
/// there, which DynamoDB itself never lets happen.
#[allow(dead_code, reason = "called by the SQLite tests only (see above)")]
pub(crate) async fn concurrent_parked_refreshes_move_each_key_once<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader + CounterCorrector,
{
    let records = records_in_one_bucket(5);
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let calls = records.iter().map(|r| delta(&r.id, "2026-11-09T08:00:00Z", 200, true, 1)).collect();
    store.apply_deliveries(&[batch_of(50, calls)], at("2026-11-09T08:01:00Z")).await.unwrap();
    let (one, other) = tokio::join!(store.refresh_parked_totals(), store.refresh_parked_totals());
    let (one, other) = (one.unwrap(), other.unwrap());
    assert_eq!(one.keys_moved + other.keys_moved, 5, "{one:?} {other:?}");
    for record in &records {
        assert_eq!(store.get_key(&record.id).await.unwrap().unwrap().totals.usage_count, 1, "moved once");
    }
}

pub(crate) async fn updates_set_only_what_they_name_and_keep_the_history<S: KeyStore>(store: &S) {
    let mut record = new_record("ada@example.com", Some("pro"));
    record.totals = Tally { successful_calls: 4, failed_calls: 1, usage_count: 6 };
    store.insert_key(&record).await.unwrap();
    let terms = vec![KeyTerms {
        until: at("2026-12-01T00:00:00Z"),
        user_email: record.user_email.clone(),
        plan: record.plan.clone(),
    }];
    let change = KeyChange {
        user_email: Some(Email::parse("billing@example.com").unwrap()),
        plan: Some(None),
        previous_terms: Some(terms.clone()),
        ..KeyChange::default()
    };
    let updated = store.update_key(&record.id, &change).await.unwrap();
    assert_eq!(updated.user_email.as_str(), "billing@example.com");
    assert_eq!((updated.plan.as_ref(), updated.name.as_deref()), (None, Some("pro key")));
    assert_eq!((updated.previous_terms.clone(), updated.totals), (terms, record.totals));
    assert_eq!(store.get_key(&record.id).await.unwrap(), Some(updated.clone()));
    // The same change again changes nothing.
    assert_eq!(store.update_key(&record.id, &change).await.unwrap(), updated);
    let unknown = store.update_key(&KeyId::parse("unknown00000").unwrap(), &change).await.unwrap_err();
    assert!(matches!(unknown, StoreError::NotFound { .. }), "{unknown:?}");
}

pub(crate) async fn quota_terms_and_refusal_marks_round_trip_and_clear<S: KeyStore>(store: &S) {
    let record = new_record("ada@example.com", Some("free"));
    store.insert_key(&record).await.unwrap();
    let terms = QuotaTerms::new(10_000, QuotaMode::Hard, vec![50, 80, 100]).unwrap();
    let december = Month::new(2026, 12).unwrap();
    let marked = KeyChange {
        quota: Some(Some(terms.clone())),
        quota_refused_in: Some(Some(december)),
        ..KeyChange::default()
    };
    let updated = store.update_key(&record.id, &marked).await.unwrap();
    assert_eq!((updated.quota.as_ref(), updated.quota_refused_in), (Some(&terms), Some(december)));
    let read = store.get_key(&record.id).await.unwrap().unwrap();
    assert_eq!(read, updated);
    assert!(read.is_quota_refused_at(at("2026-12-31T23:59:59.999Z")));
    assert!(!read.is_quota_refused_at(at("2027-01-01T00:00:00Z")), "a new month refuses nothing");
    // A soft quota without alerts, then none: each stored form reads back as written.
    let soft = QuotaTerms::new(5, QuotaMode::Soft, Vec::new()).unwrap();
    let cleared =
        KeyChange { quota: Some(Some(soft.clone())), quota_refused_in: Some(None), ..KeyChange::default() };
    let updated = store.update_key(&record.id, &cleared).await.unwrap();
    assert_eq!((updated.quota.as_ref(), updated.quota_refused_in), (Some(&soft), None));
    assert_eq!(store.get_key(&record.id).await.unwrap(), Some(updated));
    let none =
        store.update_key(&record.id, &KeyChange { quota: Some(None), ..KeyChange::default() }).await.unwrap();
    assert_eq!(none.quota, None);
    assert_eq!(store.get_key(&record.id).await.unwrap(), Some(none));
}

/// Plan quotas: a customer's keys count together, each threshold is claimed
/// once, a hard quota marks every key of the customer and moves the revocation epoch once, and a
/// redelivered buffer moves nothing.
pub(crate) async fn a_customers_billable_calls_cross_its_quota_once_across_keys_and_redeliveries<S>(store: &S)
where
    S: KeyStore + UsageWriter + QuotaLedger,
{
    let terms = QuotaTerms::new(10, QuotaMode::Hard, vec![50, 100]).unwrap();
    let quota = KeyChange { quota: Some(Some(terms)), ..KeyChange::default() };
    let (first, second) = (new_record("ada@example.com", None), new_record("ada@example.com", None));
    let other = new_record("bob@example.com", None);
    for record in [&first, &second, &other] {
        store.insert_key(record).await.unwrap();
    }
    for record in [&first, &second] {
        store.update_key(&record.id, &quota).await.unwrap();
    }
    let epoch = store.revocation_epoch().await.unwrap();
    let at = at("2026-12-07T10:00:30Z");
    // 4 billable on one key, 2 on the other (and a failed call, never billable): 6 of 10.
    let buffer = batch_of(
        1,
        vec![
            delta(&first.id, "2026-12-07T10:00:00Z", 200, true, 4),
            delta(&second.id, "2026-12-07T10:00:01Z", 200, true, 2),
            delta(&second.id, "2026-12-07T10:00:02Z", 500, true, 1),
            delta(&other.id, "2026-12-07T10:00:03Z", 200, true, 50),
        ],
    );
    let report = store.apply_deliveries(std::slice::from_ref(&buffer), at).await.unwrap();
    assert!(report.quota_writes >= 1, "the one customer with a quota: {report:?}");
    let thresholds: Vec<(u16, u64)> = report.alerts.iter().map(|a| (a.threshold, a.used)).collect();
    assert_eq!(thresholds, [(50, 6)]);
    assert_eq!(report.alerts[0].keys, {
        let mut ids = vec![first.id.clone(), second.id.clone()];
        ids.sort();
        ids
    });
    assert!(report.quota_refusals.is_empty());
    // Redelivered: nothing moves, nothing is announced again.
    let again = store.apply_deliveries(std::slice::from_ref(&buffer), at).await.unwrap();
    assert_eq!((again.quota_writes, again.alerts.len()), (0, 0), "{again:?}");
    // 4 more: exactly the quota, every call served; 100% reached, nothing refused yet.
    let full = batch_of(2, vec![delta(&first.id, "2026-12-07T10:01:00Z", 200, true, 4)]);
    let report = store.apply_deliveries(&[full], at).await.unwrap();
    assert_eq!(report.alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [100]);
    assert!(report.quota_refusals.is_empty(), "the quota's own calls are all served");
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch);
    // One more: past the quota; both keys refused for December, the epoch moved once.
    let past = batch_of(3, vec![delta(&second.id, "2026-12-07T10:02:00Z", 200, true, 1)]);
    let report = store.apply_deliveries(&[past], at).await.unwrap();
    assert_eq!(report.quota_refusals.len(), 1);
    assert_eq!((report.quota_refusals[0].used, report.quota_refusals[0].quota), (11, 10));
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 1);
    let december = Month::new(2026, 12).unwrap();
    for record in [&first, &second] {
        assert_eq!(store.get_key(&record.id).await.unwrap().unwrap().quota_refused_in, Some(december));
    }
    assert_eq!(store.get_key(&other.id).await.unwrap().unwrap().quota_refused_in, None);
    // Calls already in flight count, but nothing is marked or announced twice.
    let late = batch_of(4, vec![delta(&first.id, "2026-12-07T10:02:30Z", 200, true, 3)]);
    let report = store.apply_deliveries(&[late], at).await.unwrap();
    assert!(report.alerts.is_empty() && report.quota_refusals.is_empty(), "{report:?}");
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 1);
    // A key the customer creates afterwards is refused after its first calls, counted.
    let fresh = new_record("ada@example.com", None);
    store.insert_key(&fresh).await.unwrap();
    store.update_key(&fresh.id, &quota).await.unwrap();
    let first_calls = batch_of(6, vec![delta(&fresh.id, "2026-12-07T10:03:00Z", 200, true, 1)]);
    let report = store.apply_deliveries(&[first_calls], at).await.unwrap();
    assert_eq!(report.quota_refusals.len(), 1, "{report:?}");
    assert_eq!(store.get_key(&fresh.id).await.unwrap().unwrap().quota_refused_in, Some(december));
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 2);
    // A late call of November never takes December's mark back.
    let november = batch_of(5, vec![delta(&first.id, "2026-11-30T23:59:59Z", 200, true, 11)]);
    let report = store.apply_deliveries(&[november], at).await.unwrap();
    assert!(report.quota_refusals.is_empty(), "nothing to mark: {report:?}");
    assert_eq!(store.get_key(&first.id).await.unwrap().unwrap().quota_refused_in, Some(december));

    // What a plan change reads and sets: the month's total, and the refusal lifted or put back.
    let ada = Email::parse("ada@example.com").unwrap();
    let november = Month::new(2026, 11).unwrap();
    assert_eq!(store.quota_used(&ada, december).await.unwrap(), 15);
    assert_eq!(store.quota_used(&ada, november).await.unwrap(), 11);
    assert_eq!(store.quota_used(&Email::parse("bob@example.com").unwrap(), december).await.unwrap(), 0);
    let epoch = store.revocation_epoch().await.unwrap();
    assert_eq!(store.set_quota_refusal(&ada, december, false).await.unwrap(), 3);
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 1);
    assert_eq!(store.get_key(&fresh.id).await.unwrap().unwrap().quota_refused_in, None);
    assert_eq!(store.set_quota_refusal(&ada, december, false).await.unwrap(), 0, "nothing left to lift");
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 1, "no move when nothing changed");
    assert_eq!(store.set_quota_refusal(&ada, december, true).await.unwrap(), 3);
    assert_eq!(store.get_key(&second.id).await.unwrap().unwrap().quota_refused_in, Some(december));
    assert_eq!(store.get_key(&other.id).await.unwrap().unwrap().quota_refused_in, None);
}

pub(crate) async fn imported_usage_is_part_of_the_lifetime_totals<S>(store: &S)
where
    S: KeyStore + UsageWriter + UsageReader + CounterCorrector,
{
    let record = new_record("legacy@example.com", None);
    store.insert_key(&record).await.unwrap();
    let imported = UsageTotals {
        tally: Tally { successful_calls: 100, failed_calls: 5, usage_count: 120 },
        last_used: Some(at("2026-10-01T00:00:00Z")),
    };
    let change = KeyChange { imported: Some(imported), ..KeyChange::default() };
    let stored = store.update_key(&record.id, &change).await.unwrap();
    assert_eq!((stored.imported, stored.totals), (imported, imported.tally));
    store
        .apply_deliveries(
            &[batch_of(9, vec![delta(&record.id, "2026-11-09T08:00:00Z", 200, true, 2)])],
            at("2026-11-09T12:00:20Z"),
        )
        .await
        .unwrap();
    // Reconcile's refresh: the day items plus what was counted before meter.
    let refreshed = store.refresh_key_totals(&record.id).await.unwrap().unwrap();
    assert_eq!(refreshed.tally, Tally { successful_calls: 102, failed_calls: 5, usage_count: 122 });
    assert_eq!(refreshed.last_used, Some(at("2026-11-09T08:00:00Z")));
    // Importing the same usage again moves nothing; importing a correction moves the totals by the difference.
    assert_eq!(store.update_key(&record.id, &change).await.unwrap().totals.usage_count, 122);
    let less = UsageTotals { tally: Tally { usage_count: 110, ..imported.tally }, ..imported };
    let stored = store
        .update_key(&record.id, &KeyChange { imported: Some(less), ..KeyChange::default() })
        .await
        .unwrap();
    assert_eq!(stored.totals.usage_count, 112);
}

pub(crate) async fn a_rotation_writes_both_keys_or_neither<S: KeyStore>(store: &S) {
    let old = new_record("ada@example.com", Some("pro"));
    store.insert_key(&old).await.unwrap();
    let end = at("2026-11-02T09:30:00Z");
    let mut new = new_record("ada@example.com", Some("pro"));
    new.created_at = at("2026-11-01T09:30:00Z");
    let rotated = store.rotate_key(&old.id, &new, end).await.unwrap();
    assert_eq!(rotated.grace_ends_at, Some(end));
    assert_eq!(store.get_key(&old.id).await.unwrap(), Some(rotated.clone()));
    assert_eq!(store.get_key(&new.id).await.unwrap(), Some(new.clone()));
    assert!(!rotated.is_refused_at(at("2026-11-02T09:29:59Z")) && rotated.is_refused_at(end));
    // Rotating it again is refused and writes nothing.
    let another = new_record("ada@example.com", Some("pro"));
    let err = store.rotate_key(&old.id, &another, end).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { .. }), "{err:?}");
    assert_eq!(store.get_key(&another.id).await.unwrap(), None);
    // A taken id for the new key leaves the old key as it was.
    let fresh = new_record("grace@example.com", None);
    store.insert_key(&fresh).await.unwrap();
    let mut clash = new_record("grace@example.com", None);
    clash.id = new.id.clone();
    let err = store.rotate_key(&fresh.id, &clash, end).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get_key(&fresh.id).await.unwrap().unwrap().grace_ends_at, None);
    let unknown = store.rotate_key(&KeyId::parse("unknown00000").unwrap(), &another, end).await.unwrap_err();
    assert!(matches!(unknown, StoreError::NotFound { .. }), "{unknown:?}");
}

/// Generates one `#[tokio::test]` per contract case for a backend.
macro_rules! contract_suite {
    ($make:path, $seed:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn insert_then_get_round_trips() {
            contract::insert_then_get_round_trips(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn insert_refuses_a_taken_id() {
            contract::insert_refuses_a_taken_id(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unknown_ids_and_hashes_are_absent() {
            contract::unknown_ids_and_hashes_are_absent(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn finds_keys_by_hash() {
            contract::finds_keys_by_hash(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lists_every_key_in_id_order() {
            contract::lists_every_key_in_id_order(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn revocation_marks_the_key_and_moves_the_epoch() {
            contract::revocation_marks_the_key_and_moves_the_epoch(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn revoking_an_unknown_key_changes_nothing() {
            contract::revoking_an_unknown_key_changes_nothing(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_revocations_each_move_the_epoch() {
            contract::concurrent_revocations_each_move_the_epoch(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_delivery_adds_to_its_days_exactly_once() {
            contract::a_delivery_adds_to_its_days_exactly_once(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unknown_keys_get_no_items_and_revoked_keys_still_count() {
            contract::unknown_keys_get_no_items_and_revoked_keys_still_count(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_buffer_writes_each_key_day_once_and_costs_what_dynamodb_charges() {
            contract::a_buffer_writes_each_key_day_once_and_costs_what_dynamodb_charges(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn last_used_never_moves_back() {
            contract::last_used_never_moves_back(&$make().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn marks_expire_by_when_they_were_written_not_by_their_events() {
            contract::marks_expire_by_when_they_were_written_not_by_their_events(&$make().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn single_calls_are_parked_read_with_the_days_and_cleared() {
            contract::single_calls_are_parked_read_with_the_days_and_cleared(&$make().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn key_totals_are_refreshed_from_the_day_items() {
            contract::key_totals_are_refreshed_from_the_day_items(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn key_totals_follow_every_write() {
            contract::key_totals_follow_every_write(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn updates_set_only_what_they_name_and_keep_the_history() {
            contract::updates_set_only_what_they_name_and_keep_the_history(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn quota_terms_and_refusal_marks_round_trip_and_clear() {
            contract::quota_terms_and_refusal_marks_round_trip_and_clear(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_customers_billable_calls_cross_its_quota_once_across_keys_and_redeliveries() {
            contract::a_customers_billable_calls_cross_its_quota_once_across_keys_and_redeliveries(
                &$make().await,
            )
            .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn imported_usage_is_part_of_the_lifetime_totals() {
            contract::imported_usage_is_part_of_the_lifetime_totals(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_rotation_writes_both_keys_or_neither() {
            contract::a_rotation_writes_both_keys_or_neither(&$make().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn month_usage_reads_one_key_and_month() {
            let store = $make().await;
            contract::month_usage_reads_one_key_and_month(&store, |day| $seed(&store, day)).await;
        }
    };
}
