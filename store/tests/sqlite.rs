//! The store contract against the embedded SQLite store, plus what only SQLite has: a file.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

#[macro_use]
mod contract;

use meter_model::DayUsage;
use meter_model::time::format_instant;
use meter_store::SqliteStore;

/// A fresh store in its own temporary directory (kept alive by leaking the guard for the test's life).
async fn make() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open(&dir.join("meter.db")).unwrap()
}

async fn seed(store: &SqliteStore, day: DayUsage) {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.execute(
        "INSERT INTO usage_counters (key_id, day, successful_calls, failed_calls, usage_count, last_used, reconciled_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![
            day.key_id.as_str(),
            day.day.to_string(),
            i64::try_from(day.tally.successful_calls).unwrap(),
            i64::try_from(day.tally.failed_calls).unwrap(),
            i64::try_from(day.tally.usage_count).unwrap(),
            day.last_used.map(format_instant),
            day.reconciled_at.map(format_instant),
        ],
    )
    .unwrap();
}

contract_suite!(make, seed);

#[tokio::test]
async fn the_file_is_created_on_first_use_and_survives_reopening() {
    use meter_model::KeyStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home/meter.db");
    let record = contract::new_record("ada@example.com", Some("pro"));
    SqliteStore::open(&path).unwrap().insert_key(&record).await.unwrap();
    assert!(path.exists());
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.get_key(&record.id).await.unwrap(), Some(record));
}

#[tokio::test]
async fn an_unusable_path_is_unavailable_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file.join("meter.db")).unwrap_err();
    assert!(matches!(err, meter_model::StoreError::Unavailable { .. }), "{err:?}");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let err = SqliteStore::open(&garbage).unwrap_err();
    assert!(matches!(err, meter_model::StoreError::Unavailable { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_parked_refreshes_move_each_key_once() {
    contract::concurrent_parked_refreshes_move_each_key_once(&make().await).await;
}

/// Plan quotas on the embedded store: a customer's keys count together, each threshold is claimed
/// once, a hard quota marks every key of the customer and moves the revocation epoch once, and a
/// redelivered buffer moves nothing.
#[tokio::test]
async fn a_customers_billable_calls_cross_its_quota_once_across_keys_and_redeliveries() {
    use meter_model::quota::{QuotaMode, QuotaTerms};
    use meter_model::{KeyChange, KeyStore, Month, UsageWriter};

    let store = make().await;
    let terms = QuotaTerms::new(10, QuotaMode::Hard, vec![50, 100]).unwrap();
    let quota = KeyChange { quota: Some(Some(terms)), ..KeyChange::default() };
    let (first, second) =
        (contract::new_record("ada@example.com", None), contract::new_record("ada@example.com", None));
    let other = contract::new_record("bob@example.com", None);
    for record in [&first, &second, &other] {
        store.insert_key(record).await.unwrap();
    }
    for record in [&first, &second] {
        store.update_key(&record.id, &quota).await.unwrap();
    }
    let epoch = store.revocation_epoch().await.unwrap();
    let at = contract::at("2026-12-07T10:00:30Z");
    // 4 billable on one key, 2 on the other (and a failed call, never billable): 6 of 10.
    let buffer = contract::batch_of(
        1,
        vec![
            contract::delta(&first.id, "2026-12-07T10:00:00Z", 200, true, 4),
            contract::delta(&second.id, "2026-12-07T10:00:01Z", 200, true, 2),
            contract::delta(&second.id, "2026-12-07T10:00:02Z", 500, true, 1),
            contract::delta(&other.id, "2026-12-07T10:00:03Z", 200, true, 50),
        ],
    );
    let report = store.apply_deliveries(std::slice::from_ref(&buffer), at).await.unwrap();
    assert_eq!(report.quota_writes, 1, "one ledger write for the one customer with a quota");
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
    let full = contract::batch_of(2, vec![contract::delta(&first.id, "2026-12-07T10:01:00Z", 200, true, 4)]);
    let report = store.apply_deliveries(&[full], at).await.unwrap();
    assert_eq!(report.alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [100]);
    assert!(report.quota_refusals.is_empty(), "the quota's own calls are all served");
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch);
    // One more: past the quota; both keys refused for December, the epoch moved once.
    let past = contract::batch_of(3, vec![contract::delta(&second.id, "2026-12-07T10:02:00Z", 200, true, 1)]);
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
    let late = contract::batch_of(4, vec![contract::delta(&first.id, "2026-12-07T10:02:30Z", 200, true, 3)]);
    let report = store.apply_deliveries(&[late], at).await.unwrap();
    assert!(report.alerts.is_empty() && report.quota_refusals.is_empty(), "{report:?}");
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 1);
    // A key the customer creates afterwards is refused after its first calls, counted.
    let fresh = contract::new_record("ada@example.com", None);
    store.insert_key(&fresh).await.unwrap();
    store.update_key(&fresh.id, &quota).await.unwrap();
    let first_calls =
        contract::batch_of(6, vec![contract::delta(&fresh.id, "2026-12-07T10:03:00Z", 200, true, 1)]);
    let report = store.apply_deliveries(&[first_calls], at).await.unwrap();
    assert_eq!(report.quota_refusals.len(), 1, "{report:?}");
    assert_eq!(store.get_key(&fresh.id).await.unwrap().unwrap().quota_refused_in, Some(december));
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 2);
    // A late call of November never takes December's mark back.
    let november =
        contract::batch_of(5, vec![contract::delta(&first.id, "2026-11-30T23:59:59Z", 200, true, 11)]);
    let report = store.apply_deliveries(&[november], at).await.unwrap();
    assert!(report.quota_refusals.is_empty(), "nothing to mark: {report:?}");
    assert_eq!(store.get_key(&first.id).await.unwrap().unwrap().quota_refused_in, Some(december));
}
