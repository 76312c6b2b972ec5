//! A cache hit allocates nothing: counted with a global allocator that tallies every allocation the
//! deciding thread makes (the test harness's own threads may allocate meanwhile; that is not the
//! authorizer's).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use meter_authorizer::{Authorizer, AuthorizerConfig, Decision};
use meter_model::{ApiKey, ApiKeyRecord, Email, KeyStore, ManualClock, NewKey};
use meter_store::SqliteStore;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (const-initialized: reading it never allocates).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_cache_hit_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    let key = ApiKey::generate().unwrap();
    let record = ApiKeyRecord::new(NewKey {
        id: key.id().clone(),
        hashed_key: key.hashed(),
        user_email: Email::parse("ada@example.com").unwrap(),
        plan: None,
        name: None,
        created_at: chrono::Utc::now(),
    });
    runtime.block_on(store.insert_key(&record)).unwrap();
    let authorizer =
        Authorizer::new(store, ManualClock::new(chrono::Utc::now()), AuthorizerConfig::default());
    let presented = key.reveal().to_owned();
    assert!(matches!(runtime.block_on(authorizer.decide(Some(&presented))).unwrap(), Decision::Allow(_)));

    COUNTED.with(|counted| counted.set(true));
    for _ in 0..1000 {
        let decision = runtime.block_on(authorizer.decide(Some(&presented))).unwrap();
        assert!(matches!(decision, Decision::Allow(_)));
    }
    COUNTED.with(|counted| counted.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "allocations on 1,000 cache hits");
}
