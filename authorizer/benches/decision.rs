//! The authorizer's decision: a cache hit (the common case on a warm instance) and a miss that reads
//! the key from an in-memory store. Run: `cargo bench -p meter-authorizer --bench decision`.

use std::sync::Arc;

use chrono::Duration;
use criterion::{Criterion, criterion_group, criterion_main};
use meter_authorizer::{Authorizer, AuthorizerConfig, Decision};
use meter_model::{ApiKey, ApiKeyRecord, Email, KeyStore, ManualClock, NewKey};
use meter_store::SqliteStore;

fn decision(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("runtime: {e}"));
    let store = SqliteStore::open_in_memory().unwrap_or_else(|e| panic!("store: {e}"));
    let key = ApiKey::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let record = ApiKeyRecord::new(NewKey {
        id: key.id().clone(),
        hashed_key: key.hashed(),
        user_email: Email::parse("ada@example.com").unwrap_or_else(|e| panic!("{e}")),
        plan: None,
        name: None,
        created_at: chrono::Utc::now(),
    });
    runtime.block_on(store.insert_key(&record)).unwrap_or_else(|e| panic!("insert: {e}"));
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let hits = Authorizer::new(&store, Arc::clone(&clock), AuthorizerConfig::default());
    // Misses: an authorizer that caches nothing, so every decision reads the key.
    let misses = Authorizer::new(
        &store,
        Arc::clone(&clock),
        AuthorizerConfig { positive_ttl: Duration::zero(), ..AuthorizerConfig::default() },
    );
    let presented = key.reveal().to_owned();
    let mut group = c.benchmark_group("authorizer");
    group.bench_function("cached_hit", |b| {
        b.iter(|| matches!(runtime.block_on(hits.decide(Some(&presented))), Ok(Decision::Allow(_))));
    });
    group.bench_function("uncached_in_memory_store", |b| {
        b.iter(|| matches!(runtime.block_on(misses.decide(Some(&presented))), Ok(Decision::Allow(_))));
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
