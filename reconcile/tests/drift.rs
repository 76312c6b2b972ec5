//! Drift correction on the embedded store and a local archive.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use meter_model::ObjectSink;
use meter_model::{
    ApiKeyRecord, CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayUsage, HashedKey, KeyId,
    KeyStore, ManualClock, ParkedUsage, ReconcileRun, Revocation, StoreError, Tally, UsageTotals,
    UsageWriter,
};
use meter_reconcile::reconcile;
use meter_sim::archive::write_archive;
use meter_store::LocalDir;
use meter_store::SqliteStore;

#[tokio::test]
async fn lost_doubled_and_phantom_counts_are_corrected_exactly_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec()).unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    create_keys(&store, &spec()).await;
    drift_is_corrected_exactly(&store, &LocalDir::new(dir.path()), &generated).await;
}

#[tokio::test]
async fn a_run_that_dies_before_clearing_counts_each_parked_call_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    a_run_that_dies_before_clearing_counts_each_parked_call_once(&store, &LocalDir::new(dir.path())).await;
}

#[tokio::test]
async fn folded_parked_calls_keep_their_last_used_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    folded_parked_calls_keep_their_last_used(&store, &LocalDir::new(dir.path())).await;
}

#[tokio::test]
async fn one_reconcile_run_at_a_time_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    write_archive(dir.path(), &spec()).unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    create_keys(&store, &spec()).await;
    one_reconcile_run_at_a_time(&store, &LocalDir::new(dir.path())).await;
}

/// Calls parked while the rollup reads the archive stay parked for the next run: their rows may not be
/// in the archive the rollup read, so folding them would count them as zero and delete them.
#[tokio::test]
async fn usage_parked_during_the_rollup_stays_parked_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let archive = LocalDir::new(dir.path());
    let store = SqliteStore::open_in_memory().unwrap();
    let on = day("2026-11-29");
    let (before, parquet) = park_single_calls(&store, "early", 3, on).await;
    archive
        .put("year=2026/month=11/day=29/early.parquet", parquet, "application/vnd.apache.parquet")
        .await
        .unwrap();
    let options = options(false);
    let rollups = async {
        // The transformer parks these while the run reads the archive; their rows come later.
        let (during, _) = park_single_calls(&store, "late", 7, on).await;
        assert_eq!(during.len(), before.len());
        meter_archive::rollup(&archive, options.from, options.to, |_, _| {}).await
    };
    meter_reconcile::reconcile_with(
        &store,
        &archive,
        rollups,
        &Recorded::default(),
        &ManualClock::new(now()),
        &options,
    )
    .await
    .unwrap();
    let still: Vec<String> =
        store.parked_usage(on, on).await.unwrap().entries.iter().map(|e| e.key_id.to_string()).collect();
    assert!(!still.is_empty() && still.iter().all(|k| k.starts_with("late")), "{still:?}");
    for delta in &before {
        let item = store.day_item(&delta.key_id, on).await.unwrap().unwrap();
        assert_eq!(item.tally, delta.tally, "the early calls were folded: {}", delta.key_id);
    }
}

#[tokio::test]
async fn realtime_writes_racing_a_correction_leave_items_exact_and_totals_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec()).unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    create_keys(&store, &spec()).await;
    racing_realtime_writes_leave_totals_consistent(&store, &LocalDir::new(dir.path()), &generated).await;
}

/// Linearizes every write through one lock and logs it, so the outcome of a truly concurrent run can
/// be replayed: adds on top of whatever the item holds, corrections replace it.
struct Logged<'s> {
    inner: &'s SqliteStore,
    log: tokio::sync::Mutex<Vec<(String, Day, Option<Tally>)>>,
}

impl Logged<'_> {
    async fn add(&self, key: &str, on: Day) {
        let mut log = self.log.lock().await;
        let id = format!("concurrent{}", log.len());
        let report = self.inner.apply_deliveries(&[batch(&id, key, on, LATE)], now()).await.unwrap();
        assert_eq!(report.deliveries_applied, 1);
        log.push((key.to_owned(), on, None));
    }
}

impl CounterCorrector for Logged<'_> {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let _order = self.log.lock().await;
        self.inner.day_items(from, to).await
    }

    async fn day_item(&self, key_id: &KeyId, on: Day) -> Result<Option<DayUsage>, StoreError> {
        let _order = self.log.lock().await;
        self.inner.day_item(key_id, on).await
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        let mut log = self.log.lock().await;
        let outcome = self.inner.correct_day(correction).await?;
        if outcome == CorrectionOutcome::Applied {
            log.push((correction.key_id.to_string(), correction.day, Some(correction.target)));
        }
        Ok(outcome)
    }

    async fn refresh_key_totals(&self, key_id: &KeyId) -> Result<Option<UsageTotals>, StoreError> {
        let _order = self.log.lock().await;
        self.inner.refresh_key_totals(key_id).await
    }

    async fn parked_usage_until(
        &self,
        from: Day,
        to: Day,
        until: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<ParkedUsage, StoreError> {
        let _order = self.log.lock().await;
        self.inner.parked_usage_until(from, to, until).await
    }

    async fn refresh_parked_totals(&self) -> Result<meter_model::ParkedRefresh, StoreError> {
        let _order = self.log.lock().await;
        self.inner.refresh_parked_totals().await
    }

    async fn clear_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        let _order = self.log.lock().await;
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

key_store_via_inner!(KeyStore for Logged<'_>);

/// A real concurrent writer: batches of late events keep arriving on another task while reconcile
/// runs over the same days. Replaying the linearized log (adds add, applied corrections set) must give
/// exactly what the store holds: no increment lost to a correction, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_realtime_writer_and_reconcile_end_with_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec()).unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    create_keys(&store, &spec()).await;
    damaged_realtime(&store, &generated).await;
    let mut model = items_of(&store).await;
    let logged = Logged { inner: &store, log: tokio::sync::Mutex::new(Vec::new()) };
    let targets: Vec<(String, Day)> = expected_items(&generated).into_keys().collect();
    let writer = async {
        for _round in 0..3 {
            for (key, on) in &targets {
                logged.add(key, *on).await;
                tokio::task::yield_now().await;
            }
        }
    };
    let (archive, alerts, clock, options) =
        (LocalDir::new(dir.path()), Recorded::default(), ManualClock::new(now()), options(false));
    let reconciler = reconcile(&logged, &archive, &alerts, &clock, &options, |_, _| {});
    let ((), report) = tokio::join!(writer, reconciler);
    let report = report.unwrap();
    for (key, on, corrected) in logged.log.into_inner() {
        let item = model.entry((key, on)).or_default();
        match corrected {
            Some(target) => *item = target,
            None => item.add(LATE),
        }
    }
    model.retain(|_, tally| !tally.is_zero());
    assert_eq!(items_of(&store).await, model, "conflicts retried: {}", report.run.conflicts_retried);
    // The key totals move with every write, the writer's and the corrections' alike: whatever the
    // interleaving, they are exactly what the day items hold.
    store.refresh_parked_totals().await.unwrap();
    for key in store.list_keys().await.unwrap() {
        let days: Tally = model.iter().filter(|((k, _), _)| *k == key.id.as_str()).map(|(_, t)| *t).sum();
        assert_eq!(key.totals, days, "totals of {}", key.id);
    }
}

/// Each run leaves the analysts' key directory beside the archive: every key with its customer and
/// plan, and never a hash of a key.
#[tokio::test]
async fn a_run_writes_the_key_directory_snapshot_without_hashes() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = tempfile::tempdir().unwrap();
    write_archive(dir.path(), &spec()).unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    create_keys(&store, &spec()).await;
    let (archive, alerts, clock) = (LocalDir::new(dir.path()), Recorded::default(), ManualClock::new(now()));
    let report = reconcile(&store, &archive, &alerts, &clock, &options(false), |_, _| {}).await.unwrap();
    let snapshot = dir.path().join(meter_archive::KEYS_SNAPSHOT);
    assert!(report.written.iter().any(|w| w.ends_with(meter_archive::KEYS_SNAPSHOT)), "{:?}", report.written);
    let file = std::fs::File::open(&snapshot).unwrap();
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let schema = batches[0].schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(columns, ["key_id", "customer_email", "plan", "name", "status", "created_at", "revoked_at"]);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, store.list_keys().await.unwrap().len());
    // A dry run writes nothing, the snapshot included.
    std::fs::remove_file(&snapshot).unwrap();
    reconcile(&store, &archive, &alerts, &clock, &options(true), |_, _| {}).await.unwrap();
    assert!(!snapshot.exists());
}
