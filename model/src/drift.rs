//! Drift correction's vocabulary (CONTRACTS.md §6): a conditional correction of one day item, its
//! outcome, and the record of a reconcile run.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::counting::Tally;
use crate::key::KeyId;
use crate::time::Day;

/// Sets one day item to the authoritative counts, only if it still holds what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCorrection {
    /// The key.
    pub key_id: KeyId,
    /// The UTC day.
    pub day: Day,
    /// What the day held when it was read (open usage included); `None` when there was nothing.
    pub expected: Option<Tally>,
    /// Of `expected`, the open usage: the correction reconciles it (the day then holds `target`, none
    /// of it open), and only if it is still what it was.
    pub expected_open: Tally,
    /// The authoritative counts.
    pub target: Tally,
    /// When the correction is made (the item's `reconciledAt`).
    pub at: DateTime<Utc>,
    /// The item's `lastUsed` after the correction, when parked calls are folded into it: the latest
    /// of the item's own and the parked entries' (reconcile computes it from what it read, and the
    /// condition on `expected` makes sure nothing moved since). `None` leaves `lastUsed` as it is.
    pub last_used: Option<DateTime<Utc>>,
    /// When parked calls are folded into `target`: the instant up to which every parked entry of
    /// this key and day was read into it (the run's start). The correction marks them folded in the same write, so
    /// that readers never count them twice while (or if, after a failure) they wait to be cleared.
    pub folded_until: Option<DateTime<Utc>>,
}

impl DayCorrection {
    /// How far the counters were off, per counter: target − expected.
    #[must_use]
    pub fn delta(&self) -> TallyDelta {
        TallyDelta::between(self.expected.unwrap_or_default(), self.target)
    }
}

/// A signed difference between two tallies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TallyDelta {
    /// Billable calls.
    pub successful_calls: i128,
    /// Failed calls.
    pub failed_calls: i128,
    /// Usage events.
    pub usage_count: i128,
}

impl TallyDelta {
    /// `to − from`, per counter.
    #[must_use]
    pub fn between(from: Tally, to: Tally) -> Self {
        Self {
            successful_calls: i128::from(to.successful_calls) - i128::from(from.successful_calls),
            failed_calls: i128::from(to.failed_calls) - i128::from(from.failed_calls),
            usage_count: i128::from(to.usage_count) - i128::from(from.usage_count),
        }
    }

    /// Whether nothing differs.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// `tally` moved by this difference, per counter, never below zero.
    #[must_use]
    pub fn applied_to(&self, tally: Tally) -> Tally {
        let moved = |count: u64, by: i128| u64::try_from((i128::from(count) + by).max(0)).unwrap_or(u64::MAX);
        Tally {
            successful_calls: moved(tally.successful_calls, self.successful_calls),
            failed_calls: moved(tally.failed_calls, self.failed_calls),
            usage_count: moved(tally.usage_count, self.usage_count),
        }
    }

    /// The sum of the absolute differences: the drift's size.
    #[must_use]
    pub fn magnitude(&self) -> u128 {
        self.successful_calls.unsigned_abs()
            + self.failed_calls.unsigned_abs()
            + self.usage_count.unsigned_abs()
    }
}

/// What became of a correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrectionOutcome {
    /// The day item was set.
    Applied,
    /// The day item no longer holds what was read (the realtime writer moved it): re-read and retry.
    Changed,
    /// The key has no item: its usage is orphan usage, reported and never counted into an item.
    UnknownKey,
}

/// A reconcile run, as recorded in the store and in the drift report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileRun {
    /// Unique id of the run (its start time and a random suffix).
    pub run_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The first day reconciled.
    pub from: Day,
    /// The last day reconciled.
    pub to: Day,
    /// Whether corrections were only computed, not written.
    pub dry_run: bool,
    /// Distinct (key, day) pairs compared.
    pub items_checked: u64,
    /// Distinct keys compared.
    pub keys_checked: u64,
    /// Day items corrected (or that would be, in a dry run).
    pub items_corrected: u64,
    /// Distinct keys with at least one corrected day.
    pub keys_corrected: u64,
    /// Sum over corrected items of the absolute differences of the three counters.
    pub total_abs_drift: u128,
    /// Calls the archive holds that the realtime counters lacked (`usageCount`, summed over corrected
    /// items): counter writes that failed or were cut short, which the realtime path reports as its
    /// `CounterEventsNotApplied` metric when it can.
    pub missing_in_realtime: u64,
    /// Calls the realtime counters held beyond the archive's (`usageCount`): a request counted twice
    /// (logged in two different deliveries), or usage whose archive files are missing.
    pub extra_in_realtime: u64,
    /// Keys whose lifetime totals the run's parked refresh moved (its corrections move their keys'
    /// totals themselves, with the items).
    pub key_totals_refreshed: u64,
    /// Day items set only to fold in usage parked beside them (the realtime view was already right).
    pub items_folded: u64,
    /// Days whose open usage was only closed (no parked usage, the realtime view already right):
    /// each a 2-item write, like a correction, and no drift.
    pub items_closed: u64,
    /// Parked items cleared after the corrections.
    pub parked_cleared: u64,
    /// Usage events in the archive for keys that do not exist.
    pub orphan_events: u64,
    /// Corrections retried because the realtime writer moved the item meanwhile.
    pub conflicts_retried: u64,
}

/// The reconcile lease as another run holds it: one run at a time corrects the counters
/// (CONTRACTS.md §8), and a run that died gives the lease up when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLease {
    /// The run that holds it (its run id).
    pub holder: String,
    /// Until when.
    pub until: DateTime<Utc>,
}

/// What one refresh of the parked usage in the keys' totals did (CONTRACTS.md §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedRefresh {
    /// Parked items read (every bucket once, every day).
    pub parked_items: u64,
    /// The entries they held (one per key, day and item).
    pub parked_entries: u64,
    /// Key items read for their snapshots (one Scan of `ApiKeys`).
    pub keys_scanned: u64,
    /// Distinct keys with parked usage.
    pub keys_parked: u64,
    /// Key items whose totals moved: their parked usage had changed since the last refresh.
    pub keys_moved: u64,
    /// Key item writes refused because the item changed under the refresh, and made again.
    pub conflicts_retried: u64,
}

impl ParkedRefresh {
    /// DynamoDB read units: the parked items and the key Scan, read strongly consistent, and a
    /// re-read per conflict.
    #[must_use]
    pub fn read_units(&self) -> u64 {
        use crate::batch::capacity;
        capacity::read_units(capacity::parked_items_bytes(self.parked_items, self.parked_entries))
            + capacity::read_units(self.keys_scanned * capacity::KEY_ITEM_BYTES)
            + self.conflicts_retried
    }

    /// DynamoDB write units: one key item write per key moved, and one per conflict.
    #[must_use]
    pub fn write_units(&self) -> u64 {
        (self.keys_moved + self.conflicts_retried) * crate::batch::capacity::KEY_ITEM_WRITE_UNITS
    }
}
