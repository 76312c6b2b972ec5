//! The store contract: what every adapter of the ports must do, run against each of them.
//!
//! A backend's test file calls [`contract_suite!`] with an async constructor of a fresh, empty store
//! and an async function that seeds a `UsageCounters` day item (the write ports arrive with the
//! realtime and reconcile stages; the read side is checked here).

use chrono::{DateTime, Duration, Utc};
use meter_model::time::parse_instant;
use meter_model::{
    ApiKey, ApiKeyRecord, DayUsage, Email, HashedKey, KeyId, KeyStatus, KeyStore, NewKey, PlanName,
    StoreError, Tally, UsageReader,
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
    full.totals = Tally {
        successful_calls: 7,
        failed_calls: 2,
        usage_count: 11,
    };
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
    assert_eq!(
        store.get_key(&first.id).await.unwrap(),
        Some(first),
        "the first key must be untouched"
    );
}

pub(crate) async fn unknown_ids_and_hashes_are_absent<S: KeyStore>(store: &S) {
    store
        .insert_key(&new_record("ada@example.com", None))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_key(&KeyId::parse("zzzzzzzzzzzz").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.find_key_by_hash(&HashedKey::of("mk_nope")).await.unwrap(),
        None
    );
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
    assert_eq!(
        store.find_key_by_hash(&ours.hashed_key).await.unwrap(),
        Some(ours)
    );
    assert_eq!(
        store
            .find_key_by_hash(&HashedKey::of("sk_live_0123456789abcdef"))
            .await
            .unwrap(),
        Some(imported)
    );
}

pub(crate) async fn lists_every_key_in_id_order<S: KeyStore>(store: &S) {
    let mut records: Vec<ApiKeyRecord> = (0u32..25)
        .map(|i| {
            new_record(
                &format!("user{i}@example.com"),
                i.is_multiple_of(3).then_some("pro"),
            )
        })
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

    let first = store
        .revoke_key(&record.id, at("2026-11-03T08:00:00Z"))
        .await
        .unwrap();
    assert!(!first.was_already_revoked);
    assert_eq!(first.epoch, 1);
    assert_eq!(first.record.status, KeyStatus::Revoked);
    assert_eq!(first.record.revoked_at, Some(at("2026-11-03T08:00:00Z")));
    assert_eq!(store.revocation_epoch().await.unwrap(), 1);
    assert_eq!(
        store.get_key(&record.id).await.unwrap(),
        Some(first.record.clone())
    );

    // Revoking again is harmless: the first revocation time stays, the epoch moves again (so caches
    // that somehow missed the first bump are flushed now).
    let again = store
        .revoke_key(&record.id, at("2026-11-04T08:00:00Z"))
        .await
        .unwrap();
    assert!(again.was_already_revoked);
    assert_eq!(again.epoch, 2);
    assert_eq!(again.record.revoked_at, Some(at("2026-11-03T08:00:00Z")));
    // Everything else about the key is as it was.
    let mut expected = record.clone();
    expected.status = KeyStatus::Revoked;
    expected.revoked_at = Some(at("2026-11-03T08:00:00Z"));
    assert_eq!(again.record, expected);
}

pub(crate) async fn revoking_an_unknown_key_changes_nothing<S: KeyStore>(store: &S) {
    let err = store
        .revoke_key(&KeyId::parse("zzzzzzzzzzzz").unwrap(), Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(store.revocation_epoch().await.unwrap(), 0);
    assert!(store.list_keys().await.unwrap().is_empty());
}

pub(crate) async fn concurrent_revocations_each_move_the_epoch<S: KeyStore>(store: &S) {
    let records: Vec<_> = (0..8)
        .map(|i| new_record(&format!("u{i}@example.com"), None))
        .collect();
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let revocations = records
        .iter()
        .map(|r| store.revoke_key(&r.id, at("2026-11-05T00:00:00Z")));
    let results = futures::future::join_all(revocations).await;
    let mut epochs: Vec<u64> = results.into_iter().map(|r| r.unwrap().epoch).collect();
    epochs.sort_unstable();
    assert_eq!(
        epochs,
        (1..=8).collect::<Vec<_>>(),
        "every revocation gets its own epoch"
    );
    assert_eq!(store.revocation_epoch().await.unwrap(), 8);
}

pub(crate) fn day_item(key: &KeyId, day: &str, n: u64) -> DayUsage {
    DayUsage {
        key_id: key.clone(),
        day: day.parse().unwrap(),
        tally: Tally {
            successful_calls: n,
            failed_calls: n / 2,
            usage_count: n * 2,
        },
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
    assert!(
        store
            .month_usage(&key, "2026-09".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
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
        async fn month_usage_reads_one_key_and_month() {
            let store = $make().await;
            contract::month_usage_reads_one_key_and_month(&store, |day| $seed(&store, day)).await;
        }
    };
}
