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
