//! A reconcile scenario shared by the SQLite and the emulator tests: an archive with known distinct
//! events, counters damaged the ways production damages them, and the checks that reconcile repairs
//! them exactly and that a second run changes nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use meter_model::{
    ApiKeyRecord, BatchDelta, BatchId, CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayDelta,
    DayUsage, Email, HashedKey, KeyId, KeyStore, ManualClock, MarkerSlot, NewKey, ParkedUsage, Publisher,
    ReconcileRun, Revocation, StoreError, Tally, UsageTotals, UsageWriter,
};
use meter_model::{ObjectSink, ObjectSource};
use meter_reconcile::{ReconcileOptions, ReconcileReport, reconcile};
use meter_sim::archive::{ArchiveSpec, Generated};

pub(crate) const ORPHAN: &str = "k-orphan";

pub(crate) fn day(text: &str) -> Day {
    text.parse().unwrap()
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 2, 0, 0).unwrap()
}

/// 12 known keys and one orphan (placed where the skewed popularity gives it traffic).
pub(crate) fn spec() -> ArchiveSpec {
    let mut keys: Vec<String> = (0..12).map(|k| format!("key{k:02}")).collect();
    keys.insert(1, ORPHAN.to_owned());
    ArchiveSpec {
        keys,
        duplicates_per_mille: 30,
        straddle_per_mille: 300,
        files_per_day: 3,
        ..ArchiveSpec::realistic(3_000, 0, day("2026-11-28"), 3, 42)
    }
}

pub(crate) async fn create_keys<S: KeyStore>(store: &S, spec: &ArchiveSpec) {
    for name in spec.keys.iter().filter(|k| *k != ORPHAN) {
        let record = ApiKeyRecord::new(NewKey {
            id: KeyId::parse(name).unwrap(),
            hashed_key: HashedKey::of(name),
            user_email: Email::parse("ops@example.com").unwrap(),
            plan: None,
            name: None,
            created_at: now(),
        });
        store.insert_key(&record).await.unwrap();
    }
}

pub(crate) fn batch(id: &str, key: &str, on: Day, tally: Tally) -> BatchDelta {
    let last_used = on.date().and_hms_opt(12, 0, 0).unwrap().and_utc();
    BatchDelta::new(
        BatchId::from_digest(id.as_bytes()),
        MarkerSlot::default(),
        [DayDelta { key_id: KeyId::parse(key).unwrap(), day: on, tally, last_used }],
    )
}

fn double(t: Tally) -> Tally {
    Tally {
        successful_calls: t.successful_calls * 2,
        failed_calls: t.failed_calls * 2,
        usage_count: t.usage_count * 2,
    }
}

/// Applies the truth with faults: every fifth (key, day) lost, every fifth doubled, the rest exact,
/// plus a phantom item on a day with no events.
pub(crate) async fn damaged_realtime<S: UsageWriter>(store: &S, generated: &Generated) {
    for (index, ((key, on), tally)) in generated.truth.iter().enumerate() {
        if key == ORPHAN {
            continue;
        }
        let applied = match index % 5 {
            0 => continue,
            1 => double(*tally),
            _ => *tally,
        };
        store.apply_deliveries(&[batch(&format!("{key}{on}"), key, *on, applied)], now()).await.unwrap();
    }
    let phantom = Tally { successful_calls: 3, failed_calls: 1, usage_count: 5 };
    store.apply_deliveries(&[batch("phantom", "key00", day("2026-11-27"), phantom)], now()).await.unwrap();
}

pub(crate) fn options(dry_run: bool) -> ReconcileOptions {
    ReconcileOptions { from: day("2026-11-27"), to: day("2026-12-01"), dry_run, alert_threshold: Some(10) }
}

/// A publisher that keeps what it was given.
#[derive(Default)]
pub(crate) struct Recorded(pub(crate) Mutex<Vec<(String, String)>>);

impl Publisher for Recorded {
    async fn publish_message(&self, subject: &str, message: &str) -> Result<(), StoreError> {
        self.0.lock().unwrap().push((subject.to_owned(), message.to_owned()));
        Ok(())
    }
}

pub(crate) async fn run<S, A>(store: &S, archive: &A, alerts: &Recorded, dry_run: bool) -> ReconcileReport
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
{
    reconcile(store, archive, alerts, &ManualClock::new(now()), &options(dry_run), |_, _| {}).await.unwrap()
}

/// The known keys' truth inside the reconciled range.
pub(crate) fn expected_items(generated: &Generated) -> BTreeMap<(String, Day), Tally> {
    generated.truth.iter().filter(|((key, _), _)| key != ORPHAN).map(|(k, v)| (k.clone(), *v)).collect()
}

/// The realtime view of the days: day items with the parked usage added in.
pub(crate) async fn items_of<S: CounterCorrector>(store: &S) -> BTreeMap<(String, Day), Tally> {
    let (from, to) = (day("2026-11-27"), day("2026-12-01"));
    let parked = store.parked_usage(from, to).await.unwrap();
    meter_model::batch::with_parked(store.day_items(from, to).await.unwrap(), &parked.entries)
        .into_iter()
        .filter(|item| !item.tally.is_zero())
        .map(|item| ((item.key_id.to_string(), item.day), item.tally))
        .collect()
}

/// Every key's lifetime totals equal the sum of its day items.
pub(crate) async fn assert_totals_match_days<S: CounterCorrector + KeyStore>(store: &S) {
    let (from, to) = (day("2000-01-01"), day("2100-01-01"));
    let parked = store.parked_usage(from, to).await.unwrap();
    let items = meter_model::batch::with_parked(store.day_items(from, to).await.unwrap(), &parked.entries);
    let mut sums: BTreeMap<String, Tally> = BTreeMap::new();
    for item in items {
        sums.entry(item.key_id.to_string()).or_default().add(item.tally);
    }
    for key in store.list_keys().await.unwrap() {
        assert_eq!(
            key.totals,
            sums.get(key.id.as_str()).copied().unwrap_or_default(),
            "totals of {}",
            key.id
        );
    }
}

/// The whole scenario: a dry run changes nothing, a run repairs everything, a second run finds nothing.
pub(crate) async fn drift_is_corrected_exactly<S, A>(store: &S, archive: &A, generated: &Generated)
where
    S: CounterCorrector + KeyStore + UsageWriter,
    A: ObjectSource + ObjectSink,
{
    damaged_realtime(store, generated).await;
    // Single calls of keys that share a bucket are parked beside the items; these keys have nothing in
    // the archive, so reconcile folds them to zero and clears them.
    park_single_calls(store, "parked", 0, day("2026-11-28")).await;
    let range = (day("2026-11-27"), day("2026-12-01"));
    assert!(!store.parked_usage(range.0, range.1).await.unwrap().entries.is_empty(), "usage was parked");
    let before = items_of(store).await;
    let expected = expected_items(generated);
    assert_ne!(before, expected, "the faults caused drift");

    let alerts = Recorded::default();
    let dry = run(store, archive, &alerts, true).await;
    assert!(dry.run.items_corrected > 0);
    assert!(dry.written.is_empty());
    assert_eq!(items_of(store).await, before, "a dry run writes nothing");
    assert!(!store.parked_usage(range.0, range.1).await.unwrap().entries.is_empty(), "nor clears anything");
    assert!(archive.list("rollups").await.unwrap().is_empty());

    let first = run(store, archive, &alerts, false).await;
    assert_eq!(first.run.items_corrected, dry.run.items_corrected);
    assert_eq!(first.run.total_abs_drift, dry.run.total_abs_drift);
    assert!(first.drift.iter().any(|l| l.realtime.is_zero()), "lost batches created items");
    assert!(first.drift.iter().any(|l| l.authoritative.is_zero()), "the phantom was zeroed");
    let orphan_usage: u64 =
        generated.truth.iter().filter(|((k, _), _)| k == ORPHAN).map(|(_, t)| t.usage_count).sum();
    assert!(orphan_usage > 0);
    assert_eq!(first.run.orphan_events, orphan_usage);
    assert_eq!(items_of(store).await, expected);
    assert!(store.parked_usage(range.0, range.1).await.unwrap().entries.is_empty(), "folded and cleared");
    assert!(store.get_key(&KeyId::parse(ORPHAN).unwrap()).await.unwrap().is_none(), "orphans get no item");
    assert_totals_match_days(store).await;
    assert!(first.alerted);
    assert_eq!(alerts.0.lock().unwrap().len(), 1);
    let rollups = archive.list("rollups").await.unwrap();
    assert_eq!(rollups.len(), 5, "one rollup file per day of the range: {rollups:?}");
    assert_eq!(archive.list("drift").await.unwrap().len(), 2);

    let second = run(store, archive, &alerts, false).await;
    assert_eq!(second.run.items_corrected, 0, "{:?}", second.drift);
    assert_eq!(second.run.total_abs_drift, 0);
    assert!(!second.alerted);
    assert_eq!(items_of(store).await, expected);
}

/// A store that lets the realtime writer add to an item between reconcile's read and its correction,
/// the first time each item is corrected: the race CONTRACTS.md  rules out.
///
/// Writes go one at a time: moto undoes a cancelled transaction by restoring a snapshot of the whole
/// table, which would also undo other keys' writes made meanwhile (real DynamoDB cancels only the
/// transaction), and this test cancels a transaction on purpose for every item it races.
pub(crate) struct RacingRealtime<'s, S> {
    pub(crate) inner: &'s S,
    /// Whether the realtime writer races the corrections at all.
    pub(crate) race: bool,
    pub(crate) raced: Mutex<Vec<(KeyId, Day)>>,
    pub(crate) one_write_at_a_time: tokio::sync::Mutex<()>,
    /// Clearing parked usage fails, as when the run dies right after its corrections.
    pub(crate) dies_before_clearing: bool,
}

impl<'s, S> RacingRealtime<'s, S> {
    pub(crate) fn new(inner: &'s S) -> Self {
        Self {
            inner,
            race: true,
            raced: Mutex::new(Vec::new()),
            one_write_at_a_time: tokio::sync::Mutex::new(()),
            dies_before_clearing: false,
        }
    }
}

/// Two calls, so that the realtime path writes them to the day item (a single call would be parked).
pub(crate) const LATE: Tally = Tally { successful_calls: 2, failed_calls: 0, usage_count: 2 };

impl<S: CounterCorrector + UsageWriter> CounterCorrector for RacingRealtime<'_, S> {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        self.inner.day_items(from, to).await
    }

    async fn day_item(&self, key_id: &KeyId, day: Day) -> Result<Option<DayUsage>, StoreError> {
        self.inner.day_item(key_id, day).await
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        let _turn = self.one_write_at_a_time.lock().await;
        let first = self.race && {
            let mut raced = self.raced.lock().unwrap();
            let pair = (correction.key_id.clone(), correction.day);
            !raced.contains(&pair) && {
                raced.push(pair);
                true
            }
        };
        if first {
            let id = format!("late{}{}", correction.key_id, correction.day);
            let report = self
                .inner
                .apply_deliveries(&[batch(&id, correction.key_id.as_str(), correction.day, LATE)], now())
                .await?;
            assert!(report.failure.is_none(), "{:?}", report.failure);
        }
        self.inner.correct_day(correction).await
    }

    async fn refresh_key_totals(&self, key_id: &KeyId) -> Result<Option<UsageTotals>, StoreError> {
        self.inner.refresh_key_totals(key_id).await
    }

    async fn parked_usage_until(
        &self,
        from: Day,
        to: Day,
        until: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<ParkedUsage, StoreError> {
        self.inner.parked_usage_until(from, to, until).await
    }

    async fn refresh_parked_totals(&self) -> Result<meter_model::ParkedRefresh, StoreError> {
        self.inner.refresh_parked_totals().await
    }

    async fn clear_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        if self.dies_before_clearing {
            return Err(StoreError::Unavailable {
                operation: "clear parked usage".into(),
                hint: "the run died here (a test)".into(),
                source: None,
            });
        }
        self.inner.clear_parked(handles).await
    }

    async fn record_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        self.inner.record_run(run).await
    }

    async fn claim_reconcile_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<meter_model::RunLease>, StoreError> {
        self.inner.claim_reconcile_lease(holder, now, until).await
    }

    async fn release_reconcile_lease(&self, holder: &str) -> Result<(), StoreError> {
        self.inner.release_reconcile_lease(holder).await
    }
}

/// Implements `KeyStore` for a test wrapper by handing every call to its `inner` store.
macro_rules! key_store_via_inner {
    ($($wrapper:tt)*) => {
        impl $($wrapper)* {
            async fn insert_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
                self.inner.insert_key(record).await
            }

            async fn get_key(&self, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
                self.inner.get_key(id).await
            }

            async fn find_key_by_hash(&self, hashed_key: &HashedKey) -> Result<Option<ApiKeyRecord>, StoreError> {
                self.inner.find_key_by_hash(hashed_key).await
            }

            async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
                self.inner.list_keys().await
            }

            async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<Revocation, StoreError> {
                self.inner.revoke_key(id, at).await
            }

            async fn revocation_epoch(&self) -> Result<u64, StoreError> {
                self.inner.revocation_epoch().await
            }

            async fn update_key(&self, id: &KeyId, change: &meter_model::KeyChange) -> Result<ApiKeyRecord, StoreError> {
                self.inner.update_key(id, change).await
            }

            async fn rotate_key(
                &self,
                old: &KeyId,
                new: &ApiKeyRecord,
                grace_ends_at: DateTime<Utc>,
            ) -> Result<ApiKeyRecord, StoreError> {
                self.inner.rotate_key(old, new, grace_ends_at).await
            }
        }
    };
}
#[allow(unused_imports)] // used by some of the test binaries that share this module
pub(crate) use key_store_via_inner;

key_store_via_inner!(<S: KeyStore> KeyStore for RacingRealtime<'_, S>);

/// Realtime increments that land between reconcile's read and its write make the conditional write
/// fail; reconcile re-reads and sets the item to the authoritative count *plus what the realtime writer
/// added meanwhile* (newer than the archive's rollup, so never wiped), moving the key's totals by what
/// the item held at that moment. Without the condition the totals would move by a stale delta and
/// drift from the sum of the day items (a lost or doubled increment).
pub(crate) async fn racing_realtime_writes_leave_totals_consistent<S, A>(
    store: &S,
    archive: &A,
    generated: &Generated,
) where
    S: CounterCorrector + KeyStore + UsageWriter,
    A: ObjectSource + ObjectSink,
{
    damaged_realtime(store, generated).await;
    let racing = RacingRealtime::new(store);
    let report = run(&racing, archive, &Recorded::default(), false).await;
    let raced = racing.raced.lock().unwrap().len() as u64;
    assert!(raced > 0);
    assert_eq!(report.run.conflicts_retried, raced, "each raced item was re-read once");
    let mut expected = expected_items(generated);
    for (key, on) in racing.raced.lock().unwrap().iter() {
        expected.entry((key.to_string(), *on)).or_default().add(LATE);
    }
    assert_eq!(items_of(store).await, expected, "the racing increments survive the correction");
    assert_totals_match_days(store).await;
    // The drift lines still report the archive's count as the authoritative one.
    let rollup: BTreeMap<(String, Day), Tally> =
        report.rollup.rows.iter().map(|r| ((r.key_id.clone(), r.day), r.tally)).collect();
    for line in &report.drift {
        let from_archive = rollup.get(&(line.key_id.to_string(), line.day)).copied().unwrap_or_default();
        assert_eq!(line.authoritative, from_archive, "{line:?}");
    }
}

/// Keys used only in single calls, parked beside the day items: folding them into their items keeps
/// each key's `lastUsed` (on the day item and the key's totals), as a call written directly would.
pub(crate) async fn folded_parked_calls_keep_their_last_used<S, A>(store: &S, archive: &A)
where
    S: CounterCorrector + KeyStore + UsageWriter,
    A: ObjectSource + ObjectSink,
{
    let on = day("2026-11-29");
    let (deltas, parquet) = park_single_calls(store, "seldom", 5, on).await;
    assert_eq!(store.parked_usage(on, on).await.unwrap().entries.len(), deltas.len(), "all parked");
    archive
        .put("year=2026/month=11/day=29/seldom.parquet", parquet, "application/vnd.apache.parquet")
        .await
        .unwrap();

    run(store, archive, &Recorded::default(), false).await;
    assert!(store.parked_usage(on, on).await.unwrap().entries.is_empty(), "folded and cleared");
    for delta in &deltas {
        let item = store.day_item(&delta.key_id, on).await.unwrap().unwrap();
        assert_eq!((item.tally, item.last_used), (delta.tally, Some(delta.last_used)), "{}", delta.key_id);
        let key = store.get_key(&delta.key_id).await.unwrap().unwrap();
        assert_eq!(key.last_used, Some(delta.last_used), "the key's totals: {}", delta.key_id);
    }
}

/// What readers see of each key: its month's usage, its lifetime totals and its latest call.
async fn seen<S: KeyStore + meter_model::UsageReader>(
    store: &S,
    deltas: &[DayDelta],
) -> Vec<(Tally, Tally, Option<DateTime<Utc>>)> {
    let mut seen = Vec::new();
    for delta in deltas {
        let month = store.month_usage(&delta.key_id, "2026-11".parse().unwrap()).await.unwrap();
        let key = store.get_key(&delta.key_id).await.unwrap().unwrap();
        seen.push((month.iter().map(|d| d.tally).sum::<Tally>(), key.totals, key.last_used));
    }
    seen
}

/// A run that dies after its corrections and before it clears the parked usage it folded: every
/// reader still counts each parked call once (the corrections marked them folded in their own
/// writes), the key totals are exact after the next parked refresh, and the next run clears what is
/// left, exact too.
pub(crate) async fn a_run_that_dies_before_clearing_counts_each_parked_call_once<S, A>(store: &S, archive: &A)
where
    S: CounterCorrector + KeyStore + UsageWriter + meter_model::UsageReader,
    A: ObjectSource + ObjectSink,
{
    let on = day("2026-11-29");
    let (deltas, parquet) = park_single_calls(store, "dies", 7, on).await;
    archive
        .put("year=2026/month=11/day=29/dies.parquet", parquet, "application/vnd.apache.parquet")
        .await
        .unwrap();
    store.refresh_parked_totals().await.unwrap();
    let exact: Vec<_> = deltas.iter().map(|d| (d.tally, d.tally, Some(d.last_used))).collect();
    assert_eq!(seen(store, &deltas).await, exact, "parked, before any run");

    let mut dying = RacingRealtime::new(store);
    dying.race = false;
    dying.dies_before_clearing = true;
    let clock = ManualClock::new(now());
    let died = reconcile(&dying, archive, &Recorded::default(), &clock, &options(false), |_, _| {}).await;
    assert!(died.is_err(), "the run died");
    // The day items hold the calls now; the parked entries they folded are not counted again.
    for delta in &deltas {
        assert_eq!(store.day_item(&delta.key_id, on).await.unwrap().unwrap().tally, delta.tally);
    }
    store.refresh_parked_totals().await.unwrap();
    assert_eq!(seen(store, &deltas).await, exact, "after the run died, once the parked refresh ran");

    clock.advance(chrono::Duration::hours(1));
    reconcile(store, archive, &Recorded::default(), &clock, &options(false), |_, _| {}).await.unwrap();
    assert!(store.parked_usage(on, on).await.unwrap().handles.is_empty(), "the next run clears the rest");
    assert_eq!(seen(store, &deltas).await, exact, "after the next run");
    assert_totals_match_days(store).await;
}

/// Creates the first keys named `<prefix>NNNN` that fall in parked bucket `bucket` (as many as make a
/// parked item), and parks one call of each on `on`, minutes apart. Returns the parked entries and
/// the same calls as an archive file (Parquet) to put where the test wants them.
pub(crate) async fn park_single_calls<S: KeyStore + UsageWriter>(
    store: &S,
    prefix: &str,
    bucket: u64,
    on: Day,
) -> (Vec<DayDelta>, Vec<u8>) {
    let mut keys: Vec<KeyId> = Vec::new();
    for i in 0.. {
        let key = KeyId::parse(&format!("{prefix}{i:04}")).unwrap();
        if meter_model::batch::pending_bucket(&key) == bucket {
            keys.push(key);
        }
        if keys.len() == meter_model::batch::PARK_MIN_ENTRIES {
            break;
        }
    }
    let single = Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 };
    let (mut deltas, mut events) = (Vec::new(), Vec::new());
    for (minute, key) in keys.iter().enumerate() {
        store
            .insert_key(&ApiKeyRecord::new(NewKey {
                id: key.clone(),
                hashed_key: HashedKey::of(key.as_str()),
                user_email: Email::parse("ops@example.com").unwrap(),
                plan: None,
                name: None,
                created_at: now(),
            }))
            .await
            .unwrap();
        let at = on.date().and_hms_opt(10, u32::try_from(minute).unwrap(), 7).unwrap().and_utc();
        deltas.push(DayDelta { key_id: key.clone(), day: on, tally: single, last_used: at });
        events.push(meter_model::UsageEvent {
            request_id: format!("{prefix}-{minute}").into(),
            key_id: key.as_str().to_owned().into(),
            timestamp: at,
            status_code: 200,
            should_count: true,
            method: None,
            resource: None,
            latency_ms: None,
            dropped: meter_model::DroppedFields::NONE,
        });
    }
    let delivery =
        BatchDelta::new(BatchId::from_digest(prefix.as_bytes()), MarkerSlot::default(), deltas.clone());
    store.apply_deliveries(&[delivery], now()).await.unwrap();
    (deltas, meter_archive::format::encode_parquet(&events).unwrap())
}

/// One run at a time: a run finding the lease held by another is refused before it reads or writes
/// anything (and may be retried), a dry run needs no lease, only the holder frees it, a run frees it
/// when it ends, and a lease that expired (its run died) is taken over.
pub(crate) async fn one_reconcile_run_at_a_time<S, A>(store: &S, archive: &A)
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
{
    let later = now() + chrono::Duration::minutes(10);
    assert_eq!(store.claim_reconcile_lease("manual", now(), later).await.unwrap(), None);
    assert_eq!(store.claim_reconcile_lease("manual", now(), later).await.unwrap(), None, "its own again");
    let attempt = || async {
        reconcile(store, archive, &Recorded::default(), &ManualClock::new(now()), &options(false), |_, _| {})
            .await
    };
    let refused = attempt().await.unwrap_err();
    assert!(
        matches!(&refused, meter_reconcile::ReconcileError::AnotherRun { holder, until } if holder == "manual" && *until == later),
        "{refused}"
    );
    assert!(
        refused.is_retryable() && refused.to_string().contains("another reconcile run (manual)"),
        "{refused}"
    );
    assert!(archive.list("drift").await.unwrap().is_empty(), "the refused run wrote nothing");
    run(store, archive, &Recorded::default(), true).await;
    store.release_reconcile_lease("someone-else").await.unwrap();
    assert!(attempt().await.is_err(), "only the holder frees the lease");

    store.release_reconcile_lease("manual").await.unwrap();
    attempt().await.unwrap();
    assert_eq!(store.claim_reconcile_lease("next", now(), later).await.unwrap(), None, "freed by the run");
    store.release_reconcile_lease("next").await.unwrap();

    let long_ago = now() - chrono::Duration::hours(1);
    store.claim_reconcile_lease("died", long_ago, long_ago + chrono::Duration::minutes(20)).await.unwrap();
    attempt().await.unwrap();
}
