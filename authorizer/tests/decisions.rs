//! The authorizer on the real event shapes, every outcome, the cache and revocation timing with an
//! injected clock, bounded memory under a flood, and that no key secret is ever logged.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use meter_authorizer::{
    AuthEvent, Authorizer, AuthorizerConfig, Decision, DenyReason, IdentitySource, InvocationError,
    MissingReason, handle, quota_body, response, retry_after_seconds,
};
use meter_model::quota::{QuotaMode, QuotaTerms};
use meter_model::time::parse_instant;
use meter_model::{
    ApiKey, ApiKeyRecord, Clock, Email, HashedKey, KeyChange, KeyId, KeyStore, ManualClock, Month, NewKey,
    PlanName, Revocation, StoreError,
};
use meter_store::SqliteStore;
use serde_json::{Value, json};

fn at(text: &str) -> DateTime<Utc> {
    parse_instant(text).unwrap()
}

/// A store that counts what it is asked, and can be made to fail.
#[derive(Default)]
struct Counting {
    inner: Option<SqliteStore>,
    key_reads: AtomicUsize,
    epoch_reads: AtomicUsize,
    /// The next key read returns the key as it was, then revokes it: a revocation that lands while
    /// the authorizer reads the key.
    revoke_during_next_read: std::sync::atomic::AtomicBool,
}

impl Counting {
    fn new() -> Self {
        Self { inner: Some(SqliteStore::open_in_memory().unwrap()), ..Self::default() }
    }

    fn unreachable() -> Self {
        Self::default()
    }

    fn store(&self) -> Result<&SqliteStore, StoreError> {
        self.inner.as_ref().ok_or_else(|| StoreError::Unavailable {
            operation: "get key".into(),
            hint: "test: the store is down".into(),
            source: None,
        })
    }
}

impl KeyStore for Counting {
    async fn insert_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.store()?.insert_key(record).await
    }
    async fn get_key(&self, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.key_reads.fetch_add(1, Ordering::SeqCst);
        let read = self.store()?.get_key(id).await?;
        if self.revoke_during_next_read.swap(false, Ordering::SeqCst) {
            self.store()?.revoke_key(id, at("2026-11-29T14:00:00Z")).await?;
        }
        Ok(read)
    }
    async fn find_key_by_hash(&self, hashed_key: &HashedKey) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.key_reads.fetch_add(1, Ordering::SeqCst);
        self.store()?.find_key_by_hash(hashed_key).await
    }
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store()?.list_keys().await
    }
    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<Revocation, StoreError> {
        self.store()?.revoke_key(id, at).await
    }
    async fn revocation_epoch(&self) -> Result<u64, StoreError> {
        self.epoch_reads.fetch_add(1, Ordering::SeqCst);
        self.store()?.revocation_epoch().await
    }
    async fn update_key(
        &self,
        id: &KeyId,
        change: &meter_model::KeyChange,
    ) -> Result<ApiKeyRecord, StoreError> {
        self.store()?.update_key(id, change).await
    }
    async fn rotate_key(
        &self,
        old: &KeyId,
        new: &ApiKeyRecord,
        grace_ends_at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        self.store()?.rotate_key(old, new, grace_ends_at).await
    }
}

async fn issue(store: &Counting, plan: Option<&str>) -> ApiKey {
    let key = ApiKey::generate().unwrap();
    let record = ApiKeyRecord::new(NewKey {
        id: key.id().clone(),
        hashed_key: key.hashed(),
        user_email: Email::parse("ada@example.com").unwrap(),
        plan: plan.map(|p| PlanName::parse(p).unwrap()),
        name: None,
        created_at: at("2026-11-01T00:00:00Z"),
    });
    store.insert_key(&record).await.unwrap();
    key
}

fn event(name: &str, key: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap().replace("{KEY}", key)).unwrap()
}

fn authorizer(store: Counting) -> (Authorizer<Counting, Arc<ManualClock>>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at("2026-11-29T14:00:00Z")));
    (Authorizer::new(store, Arc::clone(&clock), AuthorizerConfig::default()), clock)
}

#[tokio::test]
async fn every_event_kind_allows_an_active_key_for_the_whole_stage() {
    let store = Counting::new();
    let key = issue(&store, Some("pro")).await;
    let (authorizer, _) = authorizer(store);
    for (fixture, resource) in [
        ("rest-token.json", "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/prod/*/*"),
        ("rest-request.json", "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/prod/*/*"),
    ] {
        let request = AuthEvent::parse(&event(fixture, key.reveal())).unwrap();
        let decision = authorizer.decide(request.key()).await.unwrap();
        let answer = response(&request, &decision).unwrap();
        assert_eq!(answer["principalId"], key.id().as_str(), "{fixture}");
        assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Allow");
        assert_eq!(answer["policyDocument"]["Statement"][0]["Resource"], resource);
        assert_eq!(
            answer["context"],
            json!({"keyId": key.id().as_str(), "userEmail": "ada@example.com", "plan": "pro"})
        );
    }
    let request = AuthEvent::parse(&event("http-v2.json", key.reveal())).unwrap();
    let answer = response(&request, &authorizer.decide(request.key()).await.unwrap()).unwrap();
    assert_eq!(answer["isAuthorized"], true);
    assert_eq!(answer["context"]["keyId"], key.id().as_str());
}

#[tokio::test]
async fn missing_or_malformed_keys_are_401_and_unknown_or_revoked_are_403() {
    let store = Counting::new();
    let revoked = issue(&store, None).await;
    store.revoke_key(revoked.id(), at("2026-11-29T13:00:00Z")).await.unwrap();
    let (authorizer, _) = authorizer(store);

    let mut missing = event("rest-request.json", "x");
    missing["headers"].as_object_mut().unwrap().remove("X-Api-Key");
    let request = AuthEvent::parse(&missing).unwrap();
    let decision = authorizer.decide(request.key()).await.unwrap();
    assert_eq!(decision, Decision::Unauthorized(MissingReason::Missing));
    assert_eq!(response(&request, &decision), None, "REST: fail with Unauthorized, i.e. 401");

    let request = AuthEvent::parse(&event("rest-token.json", "not a key")).unwrap();
    assert_eq!(
        authorizer.decide(request.key()).await.unwrap(),
        Decision::Unauthorized(MissingReason::Malformed)
    );

    let unknown = ApiKey::generate().unwrap();
    let request = AuthEvent::parse(&event("rest-token.json", unknown.reveal())).unwrap();
    let decision = authorizer.decide(request.key()).await.unwrap();
    assert_eq!(decision, Decision::Deny(DenyReason::UnknownKey));
    assert_eq!(response(&request, &decision).unwrap()["policyDocument"]["Statement"][0]["Effect"], "Deny");

    // The right id with a wrong secret is indistinguishable from an unknown key.
    let mut forged = revoked.reveal().to_owned();
    forged.replace_range(20..21, if &forged[20..21] == "A" { "B" } else { "A" });
    assert_eq!(authorizer.decide(Some(&forged)).await.unwrap(), Decision::Deny(DenyReason::UnknownKey));

    let request = AuthEvent::parse(&event("http-v2.json", revoked.reveal())).unwrap();
    let decision = authorizer.decide(request.key()).await.unwrap();
    assert_eq!(decision, Decision::Deny(DenyReason::Revoked));
    assert_eq!(response(&request, &decision).unwrap(), json!({"isAuthorized": false}));
}

#[tokio::test]
async fn an_unreachable_store_fails_closed_with_500() {
    let (authorizer, _) = authorizer(Counting::unreachable());
    let key = ApiKey::generate().unwrap();
    for fixture in ["rest-token.json", "rest-request.json", "http-v2.json"] {
        let err =
            handle(&authorizer, &IdentitySource::default(), &event(fixture, key.reveal())).await.unwrap_err();
        assert!(matches!(err, InvocationError::Internal(_)), "{fixture}: {err:?}");
        assert_eq!(err.to_string(), "internal authorizer error", "anything but Unauthorized is a 500");
    }
}

#[tokio::test]
async fn the_handler_maps_each_outcome_for_each_event_kind() {
    let store = Counting::new();
    let active = issue(&store, None).await;
    let (authorizer, _) = authorizer(store);
    let unknown = ApiKey::generate().unwrap();
    // REST: allow, 403 (explicit Deny), 401 (the Unauthorized error).
    for fixture in ["rest-token.json", "rest-request.json"] {
        let allow =
            handle(&authorizer, &IdentitySource::default(), &event(fixture, active.reveal())).await.unwrap();
        assert_eq!(allow["policyDocument"]["Statement"][0]["Effect"], "Allow");
        let deny =
            handle(&authorizer, &IdentitySource::default(), &event(fixture, unknown.reveal())).await.unwrap();
        assert_eq!(deny["policyDocument"]["Statement"][0]["Effect"], "Deny");
        let unauthorized =
            handle(&authorizer, &IdentitySource::default(), &event(fixture, "!")).await.unwrap_err();
        assert!(matches!(unauthorized, InvocationError::Unauthorized));
        assert_eq!(unauthorized.to_string(), "Unauthorized");
    }
    assert_eq!(
        handle(&authorizer, &IdentitySource::default(), &event("http-v2.json", active.reveal()))
            .await
            .unwrap()["isAuthorized"],
        true
    );
    assert_eq!(
        handle(&authorizer, &IdentitySource::default(), &event("http-v2.json", unknown.reveal()))
            .await
            .unwrap()["isAuthorized"],
        false
    );
    assert!(matches!(
        handle(&authorizer, &IdentitySource::default(), &json!({"hello": "world"})).await,
        Err(InvocationError::BadEvent(_))
    ));
}

#[tokio::test]
async fn keys_of_another_format_are_found_by_hash() {
    let store = Counting::new();
    let imported = "sk_live_51HxYzAbCdEfGhIjKlMnOp";
    let record = ApiKeyRecord::new(NewKey {
        id: KeyId::parse("legacy-0042").unwrap(),
        hashed_key: HashedKey::of(imported),
        user_email: Email::parse("old@example.com").unwrap(),
        plan: None,
        name: None,
        created_at: at("2026-01-01T00:00:00Z"),
    });
    store.insert_key(&record).await.unwrap();
    let (authorizer, _) = authorizer(store);
    let Decision::Allow(grant) = authorizer.decide(Some(imported)).await.unwrap() else { panic!() };
    assert_eq!(grant.key_id.as_str(), "legacy-0042");
}

/// A rotated key works until its grace period ends and not a moment after, although its allow is
/// cached: the cache entry ends with the grace period, not 30 seconds after the last read. The key
/// issued by the rotation works throughout.
#[tokio::test]
async fn a_rotated_key_is_refused_from_the_end_of_its_grace_period_even_when_cached() {
    let store = Counting::new();
    let old = issue(&store, Some("pro")).await;
    let new = ApiKey::generate().unwrap();
    let record = ApiKeyRecord::new(NewKey {
        id: new.id().clone(),
        hashed_key: new.hashed(),
        user_email: Email::parse("ada@example.com").unwrap(),
        plan: Some(PlanName::parse("pro").unwrap()),
        name: None,
        created_at: at("2026-11-29T14:00:00Z"),
    });
    let grace_end = at("2026-11-29T14:00:10Z");
    store.rotate_key(old.id(), &record, grace_end).await.unwrap();
    let (authorizer, clock) = authorizer(store);
    let Decision::Allow(grant) = authorizer.decide(Some(old.reveal())).await.unwrap() else { panic!() };
    assert_eq!(grant.valid_until, Some(grace_end));
    clock.set(at("2026-11-29T14:00:09.999Z"));
    assert!(matches!(authorizer.decide(Some(old.reveal())).await.unwrap(), Decision::Allow(_)));
    let reads = authorizer.store().key_reads.load(Ordering::SeqCst);
    assert_eq!(reads, 1, "served from the cache until then");
    clock.set(grace_end);
    let decision = authorizer.decide(Some(old.reveal())).await.unwrap();
    assert_eq!(decision, Decision::Deny(DenyReason::Expired));
    assert_eq!(decision.reason(), "rotated key past its grace period");
    assert!(matches!(authorizer.decide(Some(new.reveal())).await.unwrap(), Decision::Allow(_)));
}

#[tokio::test]
async fn hits_within_30_seconds_read_no_key_and_revocation_lands_within_a_second() {
    let store = Counting::new();
    let key = issue(&store, None).await;
    let (authorizer, clock) = authorizer(store);
    assert!(matches!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Allow(_)));
    assert_eq!(authorizer.store().key_reads.load(Ordering::SeqCst), 1);

    // Within the same second: nothing at all is read.
    let epoch_reads = authorizer.store().epoch_reads.load(Ordering::SeqCst);
    for _ in 0..100 {
        assert!(matches!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Allow(_)));
    }
    assert_eq!(authorizer.store().epoch_reads.load(Ordering::SeqCst), epoch_reads);
    // For 29 more seconds: the key is never read again; the epoch at most once a second.
    for _ in 0..29 {
        clock.advance(Duration::seconds(1));
        assert!(matches!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Allow(_)));
    }
    assert_eq!(authorizer.store().key_reads.load(Ordering::SeqCst), 1, "cache hits read no key");
    assert!(authorizer.store().epoch_reads.load(Ordering::SeqCst) <= epoch_reads + 29);

    // Revoke; a warm instance refuses the key no later than a second after revoke returns.
    authorizer.store().revoke_key(key.id(), clock.now()).await.unwrap();
    clock.advance(Duration::milliseconds(1000));
    assert_eq!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Deny(DenyReason::Revoked));
}

#[tokio::test]
async fn a_flood_of_random_keys_stays_bounded() {
    let clock = Arc::new(ManualClock::new(at("2026-11-29T14:00:00Z")));
    let config = AuthorizerConfig { max_negative: 500, ..AuthorizerConfig::default() };
    let authorizer = Authorizer::new(Counting::new(), Arc::clone(&clock), config);
    for _ in 0..3000 {
        let random = ApiKey::generate().unwrap();
        assert_eq!(
            authorizer.decide(Some(random.reveal())).await.unwrap(),
            Decision::Deny(DenyReason::UnknownKey)
        );
    }
    let (_, refused) = authorizer.cached_entries();
    assert!(refused <= 500, "{refused}");
    // A repeated bad key is answered from memory.
    let repeated = ApiKey::generate().unwrap();
    authorizer.decide(Some(repeated.reveal())).await.unwrap();
    let reads = authorizer.store().key_reads.load(Ordering::SeqCst);
    authorizer.decide(Some(repeated.reveal())).await.unwrap();
    assert_eq!(authorizer.store().key_reads.load(Ordering::SeqCst), reads);
}

/// A log sink for the capture test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_log_error_or_panic_message_contains_a_secret() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut texts = Vec::new();
    let mut secrets = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let store = Counting::new();
            let active = issue(&store, None).await;
            let revoked = issue(&store, None).await;
            store.revoke_key(revoked.id(), at("2026-11-29T13:00:00Z")).await.unwrap();
            let (authorizer, clock) = authorizer(store);
            let unknown = ApiKey::generate().unwrap();
            for key in [&active, &revoked, &unknown] {
                secrets.push(key.reveal()[16..].to_owned());
                let decision = authorizer.decide(Some(key.reveal())).await.unwrap();
                texts.push(format!("{decision:?} {}", decision.reason()));
                texts.push(format!("{key:?} {key}"));
            }
            authorizer.store().revoke_key(active.id(), clock.now()).await.unwrap();
            clock.advance(Duration::seconds(2));
            authorizer.decide(Some(active.reveal())).await.unwrap();
            let (failing, _) = self::authorizer(Counting::unreachable());
            let _ = handle(&failing, &IdentitySource::default(), &event("rest-token.json", active.reveal()))
                .await
                .unwrap_err();
            let err = failing.decide(Some(active.reveal())).await.unwrap_err();
            texts.push(format!("{err} {err:?}"));
            texts.push(meter_model::error_chain(&err));
        });
    });
    texts.push(String::from_utf8(captured.0.lock().unwrap().clone()).unwrap());
    assert!(texts.last().unwrap().contains("revocation epoch moved"), "logs were captured");
    assert!(texts.last().unwrap().contains("failing closed"), "the 500 is logged");
    for text in &texts {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret leaked into: {text}");
        }
    }
}

/// The key is read from the configured identity source only, what API Gateway caches its answer
/// on: a key in another header is never used.
#[tokio::test]
async fn the_key_comes_from_the_identity_source_only() {
    let store = Counting::new();
    let key = issue(&store, None).await;
    let (authorizer, _) = authorizer(store);
    let bearer = format!("Bearer {}", key.reveal());

    // A REQUEST event with the key in `Authorization` only: the identity source (x-api-key) is empty.
    let mut other_header = event("rest-request.json", "x");
    let headers = other_header["headers"].as_object_mut().unwrap();
    headers.remove("X-Api-Key");
    headers.insert("Authorization".into(), bearer.clone().into());
    let request = AuthEvent::parse_with(&other_header, &IdentitySource::default()).unwrap();
    assert_eq!(request.key(), None);
    // Configured with `Authorization` as the identity source, the same event is read.
    let request = AuthEvent::parse_with(&other_header, &IdentitySource::header("Authorization")).unwrap();
    assert_eq!(request.key(), Some(key.reveal()));
    assert!(matches!(authorizer.decide(request.key()).await.unwrap(), Decision::Allow(_)));

    // HTTP APIs: the event's identity source wins over any header.
    let mut http = event("http-v2.json", key.reveal());
    http["headers"]["x-api-key"] = "mk_000000000000_00000000000000000000000000000000".into();
    let request = AuthEvent::parse_with(&http, &IdentitySource::default()).unwrap();
    assert_eq!(request.key(), Some(key.reveal()));
}

/// A revocation that lands while a warm authorizer reads the key (the read sees it active) is not
/// answered with Allow, nor cached: the epoch moved during the read, so the key is read again.
#[tokio::test]
async fn no_allow_read_under_an_older_epoch_is_served_or_cached() {
    let store = Counting::new();
    let key = issue(&store, None).await;
    let (authorizer, clock) = authorizer(store);
    authorizer.store().revoke_during_next_read.store(true, Ordering::SeqCst);
    assert_eq!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Deny(DenyReason::Revoked));
    assert_eq!(authorizer.cached_entries().0, 0, "no Allow was cached");
    // Within the same second, and after it: refused.
    assert_eq!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Deny(DenyReason::Revoked));
    clock.advance(Duration::seconds(1));
    assert_eq!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Deny(DenyReason::Revoked));
}

#[tokio::test]
async fn a_key_over_its_customers_hard_quota_is_refused_with_the_quota_until_the_month_ends() {
    let store = Counting::new();
    let key = issue(&store, Some("free")).await;
    let marked = KeyChange {
        quota: Some(Some(QuotaTerms::new(10_000, QuotaMode::Hard, vec![80]).unwrap())),
        quota_refused_in: Some(Some(Month::new(2026, 11).unwrap())),
        ..KeyChange::default()
    };
    store.update_key(key.id(), &marked).await.unwrap();
    let (authorizer, clock) = authorizer(store);
    clock.set(at("2026-11-30T23:59:58Z"));
    let request = AuthEvent::parse(&event("rest-token.json", key.reveal())).unwrap();
    let decision = authorizer.decide(request.key()).await.unwrap();
    let Decision::OverQuota(refusal) = &decision else { panic!("{decision:?}") };
    assert_eq!((refusal.quota_calls, refusal.resets_at), (Some(10_000), at("2026-12-01T00:00:00Z")));
    assert_eq!(decision.reason(), "monthly quota reached");
    assert_eq!(retry_after_seconds(refusal, clock.now()), 2);
    assert_eq!(
        quota_body(refusal),
        json!({"message": "Monthly quota reached",
               "quota": {"calls": 10_000, "period": "2026-11", "resetsAt": "2026-12-01T00:00:00.000Z"}})
    );
    // REST: a deny whose context the stage's gateway response turns into the 429 body.
    let answer = response(&request, &decision).unwrap();
    assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Deny");
    assert_eq!(
        answer["context"],
        json!({"quotaExceeded": "true", "keyId": key.id().as_str(), "quotaCalls": "10000",
               "quotaPeriod": "2026-11", "quotaResetsAt": "2026-12-01T00:00:00.000Z"})
    );
    // HTTP APIs: the simple response has no status of its own.
    let http = AuthEvent::parse(&event("http-v2.json", key.reveal())).unwrap();
    assert_eq!(response(&http, &decision).unwrap(), json!({"isAuthorized": false}));
    // Cached like a refusal, never past the month: at 00:00 UTC the key is read again and allowed.
    let reads = authorizer.store().key_reads.load(Ordering::SeqCst);
    clock.set(at("2026-11-30T23:59:59.999Z"));
    assert!(matches!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::OverQuota(_)));
    assert_eq!(authorizer.store().key_reads.load(Ordering::SeqCst), reads, "served from the cache");
    clock.set(at("2026-12-01T00:00:00Z"));
    assert!(matches!(authorizer.decide(Some(key.reveal())).await.unwrap(), Decision::Allow(_)));
}
