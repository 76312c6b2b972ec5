//! A delivered batch's effect on the counters, and what applying it did.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::counting::Tally;
use crate::key::KeyId;
use crate::time::Day;

/// How long a batch marker is kept: longer than CloudWatch Logs retries a delivery (6 hours) and
/// than the design's minimum of 24 hours, with room for a redrive by hand.
pub const MARKER_TTL: chrono::Duration = chrono::Duration::days(7);

/// Identifies one delivered batch: the same batch delivered again has the same id. Lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(String);

impl BatchId {
    /// The id of a batch whose identity is summarised by `digest` (e.g. a SHA-256).
    #[must_use]
    pub fn from_digest(digest: &[u8]) -> Self {
        Self(hex::encode(digest))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// One key's counts on one UTC day within a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayDelta {
    /// The key.
    pub key_id: KeyId,
    /// The UTC day of the events.
    pub day: Day,
    /// What the batch adds.
    pub tally: Tally,
    /// The latest event timestamp among them.
    pub last_used: DateTime<Utc>,
}

/// A batch's whole effect, one entry per (key, day), sorted by key then day. The order is part of the
/// contract: stores chunk a batch in this order, so a redelivery is chunked exactly the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchDelta {
    batch_id: BatchId,
    days: Vec<DayDelta>,
}

impl BatchDelta {
    /// Builds the delta, merging entries for the same key and day and sorting them.
    #[must_use]
    pub fn new(batch_id: BatchId, entries: impl IntoIterator<Item = DayDelta>) -> Self {
        let mut merged: BTreeMap<(KeyId, Day), (Tally, DateTime<Utc>)> = BTreeMap::new();
        for entry in entries {
            let slot = merged.entry((entry.key_id, entry.day)).or_insert((Tally::default(), entry.last_used));
            slot.0.add(entry.tally);
            slot.1 = slot.1.max(entry.last_used);
        }
        let days = merged
            .into_iter()
            .map(|((key_id, day), (tally, last_used))| DayDelta { key_id, day, tally, last_used })
            .collect();
        Self { batch_id, days }
    }

    /// The batch's id.
    #[must_use]
    pub fn batch_id(&self) -> &BatchId {
        &self.batch_id
    }

    /// The entries, sorted by key then day.
    #[must_use]
    pub fn days(&self) -> &[DayDelta] {
        &self.days
    }

    /// Whether the batch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// The entries grouped by key, in key order.
    pub fn by_key(&self) -> impl Iterator<Item = (&KeyId, &[DayDelta])> {
        self.days.chunk_by(|a, b| a.key_id == b.key_id).map(|group| (&group[0].key_id, group))
    }

    /// The batch's total over all keys and days.
    #[must_use]
    pub fn total(&self) -> Tally {
        self.days.iter().map(|d| d.tally).sum()
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Chunks written by this call.
    pub chunks_applied: usize,
    /// Chunks found already applied (a redelivery, or a retry after a partial failure).
    pub chunks_already_applied: usize,
    /// Items written by this call (counters, key totals and markers).
    pub items_written: usize,
    /// Keys that do not exist, with the usage that was therefore not counted. No item is created for
    /// them; the caller reports their usage as rejected.
    pub unknown_keys: BTreeMap<KeyId, Tally>,
}

impl ApplyReport {
    /// Whether the whole batch had been applied before.
    #[must_use]
    pub fn was_duplicate(&self) -> bool {
        self.chunks_applied == 0 && self.chunks_already_applied > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn delta(key: &str, day: &str, n: u64, at: &str) -> DayDelta {
        DayDelta {
            key_id: KeyId::parse(key).unwrap(),
            day: day.parse().unwrap(),
            tally: Tally { successful_calls: n, failed_calls: 0, usage_count: n },
            last_used: parse_instant(at).unwrap(),
        }
    }

    #[test]
    fn entries_are_merged_and_sorted_by_key_then_day() {
        let batch = BatchDelta::new(
            BatchId::from_digest(&[1, 2]),
            [
                delta("bbbbbbbbbbbb", "2026-11-30", 1, "2026-11-30T23:59:59Z"),
                delta("aaaaaaaaaaaa", "2026-12-01", 2, "2026-12-01T00:00:01Z"),
                delta("aaaaaaaaaaaa", "2026-11-30", 3, "2026-11-30T23:00:00Z"),
                delta("aaaaaaaaaaaa", "2026-11-30", 4, "2026-11-30T23:30:00Z"),
            ],
        );
        let order: Vec<_> = batch.days().iter().map(|d| (d.key_id.as_str(), d.day.to_string())).collect();
        assert_eq!(
            order,
            [
                ("aaaaaaaaaaaa", "2026-11-30".to_owned()),
                ("aaaaaaaaaaaa", "2026-12-01".to_owned()),
                ("bbbbbbbbbbbb", "2026-11-30".to_owned())
            ]
        );
        assert_eq!(batch.days()[0].tally.usage_count, 7);
        assert_eq!(batch.days()[0].last_used, parse_instant("2026-11-30T23:30:00Z").unwrap());
        assert_eq!(
            batch.by_key().map(|(k, days)| (k.as_str(), days.len())).collect::<Vec<_>>(),
            [("aaaaaaaaaaaa", 2), ("bbbbbbbbbbbb", 1)]
        );
        assert_eq!(batch.total().usage_count, 10);
        assert_eq!(batch.batch_id().as_str(), "0102");
    }
}
