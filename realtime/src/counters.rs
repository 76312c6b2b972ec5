//! The realtime counters, fed by the archive transformer: a buffer of deliveries in, each delivery
//! counted once, and a failure of the store never stopping the archive (CONTRACTS.md §8).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use meter_lambda::RetryPolicy;
use meter_model::{ApplyReport, BatchDelta, Clock, StoreError, Tally, UsageWriter};

use meter_lambda::metrics::{MetricLine, Unit};

/// What one buffer did to the counters.
#[derive(Debug, Clone, Default)]
pub struct CounterReport {
    /// Deliveries handed over.
    pub deliveries: u64,
    /// What the store did, including what it could not apply.
    pub apply: ApplyReport,
    /// Store attempts made.
    pub attempts: u32,
    /// Time spent.
    pub duration: Duration,
}

impl CounterReport {
    /// Usage events of keys that do not exist (counted as rejected, never creating items).
    #[must_use]
    pub fn unknown_key_events(&self) -> u64 {
        self.apply.unknown_keys.values().map(|t| t.usage_count).sum()
    }

    /// Adds another buffer's report.
    pub fn add(&mut self, other: Self) {
        self.deliveries += other.deliveries;
        self.apply.add(other.apply);
        self.attempts += other.attempts;
        self.duration += other.duration;
    }

    /// Adds this report's metrics to an EMF line.
    #[must_use]
    pub fn metrics(&self, line: MetricLine) -> MetricLine {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        line.with("DeliveriesCounted", count(self.apply.deliveries_applied), Unit::Count)
            .with("DuplicateDeliveries", count(self.apply.deliveries_already_applied), Unit::Count)
            .with("UnknownKeyEvents", self.unknown_key_events(), Unit::Count)
            .with("CounterEventsNotApplied", self.apply.not_applied.usage_count, Unit::Count)
            .with("KeyItemsWritten", count(self.apply.key_writes), Unit::Count)
            .with("UsageAlertsClaimed", count(self.apply.alerts.len()), Unit::Count)
            .with("QuotaRefusals", count(self.apply.quota_refusals.len()), Unit::Count)
            .with("KeyDaysWritten", count(self.apply.key_days_written), Unit::Count)
            .with("CounterWriteUnits", self.apply.write_units(), Unit::Count)
            .with("CounterReadUnits", self.apply.read_units(), Unit::Count)
            .with(
                "CounterDuration",
                u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
                Unit::Milliseconds,
            )
    }
}

/// Applies buffers of deliveries to the counters, generic over the store and the clock.
#[derive(Debug)]
pub struct RealtimeCounters<S, C> {
    store: S,
    clock: C,
    retry: RetryPolicy,
}

impl<S: UsageWriter, C: Clock> RealtimeCounters<S, C> {
    /// Counters kept in `store`; a store that is busy or unreachable is retried by `retry`.
    pub fn new(store: S, clock: C, retry: RetryPolicy) -> Self {
        Self { store, clock, retry }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Applies one buffer. Never fails: what the store could not apply is reported in
    /// [`ApplyReport::not_applied`] (a warning and a metric; the nightly reconcile restores it from the
    /// archive), so that the archive records of the same invocation are always returned.
    pub async fn apply(&self, deliveries: &[BatchDelta]) -> CounterReport {
        self.apply_until(deliveries, None).await
    }

    /// [`apply`](Self::apply), given up at `deadline` with everything counted as not applied: the
    /// caller's own answer (the archive records) must go back in time, whatever the store does. A
    /// write in flight when time runs out may still land; reconcile settles the day either way.
    pub async fn apply_before(
        &self,
        deliveries: &[BatchDelta],
        deadline: tokio::time::Instant,
    ) -> CounterReport {
        self.apply_until(deliveries, Some(deadline)).await
    }

    async fn apply_until(
        &self,
        deliveries: &[BatchDelta],
        deadline: Option<tokio::time::Instant>,
    ) -> CounterReport {
        let started = Instant::now();
        let mut report = CounterReport { deliveries: deliveries.len() as u64, ..CounterReport::default() };
        // Deliveries without usage are left out (a copy only when there are some: the transformer
        // hands over none).
        let deliveries: Cow<'_, [BatchDelta]> = if deliveries.iter().any(BatchDelta::is_empty) {
            Cow::Owned(deliveries.iter().filter(|d| !d.is_empty()).cloned().collect())
        } else {
            Cow::Borrowed(deliveries)
        };
        if deliveries.is_empty() {
            report.duration = started.elapsed();
            return report;
        }
        let mut attempts = 1;
        let retried = self.retry.run(
            || self.store.apply_deliveries(&deliveries, self.clock.now()),
            StoreError::is_transient,
            |err, pause| {
                tracing::warn!(attempt = attempts, ?pause, error = %err, "retrying the counters");
                attempts += 1;
            },
        );
        let in_time = match deadline {
            None => Ok(retried.await),
            Some(deadline) => tokio::time::timeout_at(deadline, retried).await,
        };
        let applied = match in_time {
            Ok(applied) => applied.map_err(|err| meter_model::error_chain(&err)),
            Err(_) => Err(format!(
                "the invocation's time for the counters ran out after {} ms",
                started.elapsed().as_millis()
            )),
        };
        report.attempts = attempts;
        report.apply = applied.unwrap_or_else(|failure| {
            let total = deliveries.iter().map(BatchDelta::total).sum::<Tally>();
            // A call cut off by the deadline may have written some keys: each key write moves its
            // open days and totals together, so reconcile finds those days right and closes them.
            ApplyReport { not_applied: total, failure: Some(failure), ..ApplyReport::default() }
        });
        if let Some(failure) = &report.apply.failure {
            tracing::warn!(
                events = report.apply.not_applied.usage_count,
                error = %failure,
                "usage not applied to the realtime counters; the nightly reconcile restores it"
            );
        }
        if !report.apply.unknown_keys.is_empty() {
            tracing::warn!(
                unknown_keys = report.apply.unknown_keys.len(),
                events = report.unknown_key_events(),
                "usage for unknown keys counted as rejected"
            );
        }
        report.duration = started.elapsed();
        report
    }
}
