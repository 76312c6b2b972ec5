//! The demo's faults of an invocation, played on the counter store: down for some invocations, and
//! some invocations run twice, as Firehose retries them.

use chrono::{DateTime, Utc};
use meter_model::{ApplyReport, BatchDelta, StoreError, UsageWriter};
use meter_sim::traffic::Faults;
use meter_store::SqliteStore;

/// The counter store as the demo's faults see it: some invocations find it down (their usage reaches
/// the archive, not the counters, until reconcile), and Firehose runs some invocations twice (the
/// second finds every delivery marked). The draws are seeded, so a seed gives the same run.
pub(crate) struct FaultyCounters<'s> {
    store: &'s SqliteStore,
    faults: Faults,
    rng: std::sync::Mutex<rand::rngs::Xoshiro256PlusPlus>,
    down: std::sync::atomic::AtomicU64,
    retried: std::sync::atomic::AtomicU64,
}

impl<'s> FaultyCounters<'s> {
    pub(crate) fn new(store: &'s SqliteStore, faults: Faults, seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            store,
            faults,
            rng: std::sync::Mutex::new(rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed)),
            down: std::sync::atomic::AtomicU64::new(0),
            retried: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn down_invocations(&self) -> u64 {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn retried_invocations(&self) -> u64 {
        self.retried.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl UsageWriter for FaultyCounters<'_> {
    async fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let (down, again) = {
            let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (self.faults.counters_unavailable.hit(&mut rng), self.faults.invocation_retried.hit(&mut rng))
        };
        if down {
            self.down.fetch_add(1, Relaxed);
            return Err(StoreError::Unavailable {
                operation: "apply deliveries".into(),
                hint: "the demo's fault: the counter store is down for this invocation".into(),
                source: None,
            });
        }
        let mut report = self.store.apply_deliveries(deliveries, applied_at).await?;
        if again {
            self.retried.fetch_add(1, Relaxed);
            report.add(self.store.apply_deliveries(deliveries, applied_at).await?);
        }
        Ok(report)
    }
}
