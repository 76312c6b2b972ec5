//! The counting rules of CONTRACTS.md §4, the one place that decides what a call counts as. Realtime,
//! reconcile and reports all go through [`Tally::of_call`], so they cannot disagree.

use serde::{Deserialize, Serialize};

/// Whether a call is billable: a 2xx response that the backend marked `shouldCount`.
#[must_use]
pub fn is_billable(status_code: u16, should_count: bool) -> bool {
    should_count && (200..=299).contains(&status_code)
}

/// Whether a call failed: any status of 400 or above, counted or not.
#[must_use]
pub fn is_failed(status_code: u16) -> bool {
    status_code >= 400
}

/// The three counters kept per key (lifetime) and per key and day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// Billable calls (see [`is_billable`]).
    pub successful_calls: u64,
    /// Calls that failed (see [`is_failed`]).
    pub failed_calls: u64,
    /// Every valid usage event.
    pub usage_count: u64,
}

impl Tally {
    /// What one call contributes.
    #[must_use]
    pub fn of_call(status_code: u16, should_count: bool) -> Self {
        Self {
            successful_calls: u64::from(is_billable(status_code, should_count)),
            failed_calls: u64::from(is_failed(status_code)),
            usage_count: 1,
        }
    }

    /// Adds another tally; saturates rather than wrapping, so corrupt input can never panic a batch.
    pub fn add(&mut self, other: Tally) {
        self.successful_calls = self.successful_calls.saturating_add(other.successful_calls);
        self.failed_calls = self.failed_calls.saturating_add(other.failed_calls);
        self.usage_count = self.usage_count.saturating_add(other.usage_count);
    }

    /// This tally less `other`, each counter at least zero.
    #[must_use]
    pub fn saturating_sub(self, other: Tally) -> Self {
        Self {
            successful_calls: self.successful_calls.saturating_sub(other.successful_calls),
            failed_calls: self.failed_calls.saturating_sub(other.failed_calls),
            usage_count: self.usage_count.saturating_sub(other.usage_count),
        }
    }

    /// Whether all three counters are zero.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl std::iter::Sum for Tally {
    fn sum<I: Iterator<Item = Tally>>(iter: I) -> Self {
        iter.fold(Tally::default(), |mut acc, t| {
            acc.add(t);
            acc
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_2xx_calls_are_billable() {
        assert!(is_billable(200, true));
        assert!(is_billable(299, true));
        assert!(!is_billable(200, false));
        assert!(!is_billable(199, true));
        assert!(!is_billable(300, true));
        assert!(!is_billable(404, true));
    }

    #[test]
    fn failures_start_at_400_regardless_of_should_count() {
        assert!(!is_failed(399));
        assert!(is_failed(400));
        assert!(is_failed(503));
    }

    #[test]
    fn every_call_is_usage() {
        assert_eq!(Tally::of_call(200, true), Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 });
        assert_eq!(Tally::of_call(500, true), Tally { successful_calls: 0, failed_calls: 1, usage_count: 1 });
        assert_eq!(
            Tally::of_call(302, false),
            Tally { successful_calls: 0, failed_calls: 0, usage_count: 1 }
        );
    }

    #[test]
    fn sum_adds_and_saturates() {
        let big = Tally { successful_calls: u64::MAX, failed_calls: 1, usage_count: 2 };
        let total: Tally = [big, Tally::of_call(200, true)].into_iter().sum();
        assert_eq!(total.successful_calls, u64::MAX);
        assert_eq!(total.failed_calls, 1);
        assert_eq!(total.usage_count, 3);
    }
}
