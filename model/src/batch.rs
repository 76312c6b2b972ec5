//! A delivered batch's effect on the counters, how a redelivery is recognised, and what applying a
//! buffer of deliveries did, in DynamoDB's capacity units (CONTRACTS.md §8).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::counting::Tally;
use crate::key::KeyId;
use crate::time::Day;

/// How long a delivery's marker is kept: longer than CloudWatch Logs retries a throttled destination
/// (24 hours) and than Lambda's asynchronous retries (6 hours), with room for a redrive by hand.
pub const MARKER_TTL: chrono::Duration = chrono::Duration::days(7);

/// Marker slots per minute: deliveries are marked in sets, one set per minute of their first log event
/// and shard of their log stream, so that a buffer of hundreds of deliveries costs a few writes instead
/// of one per delivery, while each set stays well under DynamoDB's 1 KB write unit at medium traffic.
pub const MARKER_SHARDS: u16 = 16;

/// Identifies one delivered batch: the same batch delivered again has the same id. Lowercase hex.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// A 64-bit digest of the id (XXH3, stable across releases): what a marker set holds. Two
    /// deliveries of one marker slot (the same minute and log stream shard) collide with odds of
    /// about 2^-64 per pair.
    #[must_use]
    pub fn short_digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.0.as_bytes())
    }
}

/// Where a delivery's marker lives: the UTC minute of its earliest log event and a shard of its log
/// stream. A redelivery has the same events and stream, so the same slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MarkerSlot {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    /// `0..MARKER_SHARDS`.
    pub shard: u16,
}

impl MarkerSlot {
    /// The slot of a delivery whose earliest log event is at `first_event` and whose log stream
    /// hashes to `stream_hash`.
    #[must_use]
    pub fn of(first_event: DateTime<Utc>, stream_hash: u64) -> Self {
        let shard = u16::try_from(stream_hash % u64::from(MARKER_SHARDS)).unwrap_or(0);
        Self { minute: first_event.timestamp().div_euclid(60), shard }
    }

    /// The slot's name: `YYYY-MM-DDTHH:MM#shard`.
    #[must_use]
    pub fn name(&self) -> String {
        let at = DateTime::<Utc>::from_timestamp(self.minute * 60, 0).unwrap_or_default();
        format!("{}#{:02}", at.format("%Y-%m-%dT%H:%M"), self.shard)
    }

    /// The slot's start.
    #[must_use]
    pub fn start(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(self.minute * 60, 0).unwrap_or_default()
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchDelta {
    batch_id: BatchId,
    slot: MarkerSlot,
    days: Vec<DayDelta>,
}

impl BatchDelta {
    /// Builds the delta, merging entries for the same key and day and sorting them.
    #[must_use]
    pub fn new(batch_id: BatchId, slot: MarkerSlot, entries: impl IntoIterator<Item = DayDelta>) -> Self {
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
        Self { batch_id, slot, days }
    }

    /// The batch's id.
    #[must_use]
    pub fn batch_id(&self) -> &BatchId {
        &self.batch_id
    }

    /// Where its marker lives.
    #[must_use]
    pub fn slot(&self) -> MarkerSlot {
        self.slot
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

/// The deliveries of one buffer merged per key and day, in key then day order: what the counters
/// receive as one write per item.
#[must_use]
pub fn merge_days<'a>(deliveries: impl IntoIterator<Item = &'a BatchDelta>) -> Vec<DayDelta> {
    let entries = deliveries.into_iter().flat_map(|d| d.days.iter().cloned());
    BatchDelta::new(BatchId::default(), MarkerSlot::default(), entries.collect::<Vec<_>>()).days
}

/// Buckets of parked usage: a key's parked usage lives in bucket `xxh3(key id) % PENDING_BUCKETS`, so
/// that a buffer's parked usage is a few items of about a kilobyte, and a key's reader reads one bucket.
pub const PENDING_BUCKETS: u64 = 64;

/// The bucket of a key's parked usage.
#[must_use]
pub fn pending_bucket(key: &KeyId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_str().as_bytes()) % PENDING_BUCKETS
}

/// Parked key days by bucket and day: each entry of the map is one parked item.
pub type ParkedByBucket = BTreeMap<(u64, Day), Vec<DayDelta>>;

/// Fewest key days worth a parked item. A parked item costs its write, and later its delete and its
/// read by reconcile; written directly, each key day costs one write unit. Below four entries an item
/// saves nothing (the small traffic's buffers, a few calls in many buckets, write directly).
pub const PARK_MIN_ENTRIES: usize = 4;

/// Splits a buffer's merged usage into what is written to the day items now and what is parked:
/// a key's day with a single call in the buffer (Zipf's tail, whose calls would otherwise cost a
/// write each), grouped by bucket and day, where a bucket's day gathers at least
/// [`PARK_MIN_ENTRIES`] of them.
#[must_use]
pub fn split_parked(days: Vec<DayDelta>) -> (Vec<DayDelta>, ParkedByBucket) {
    let mut hot = Vec::with_capacity(days.len());
    let mut parked = ParkedByBucket::new();
    for delta in days {
        if delta.tally.usage_count == 1 {
            parked.entry((pending_bucket(&delta.key_id), delta.day)).or_default().push(delta);
        } else {
            hot.push(delta);
        }
    }
    parked.retain(|_, entries| {
        if entries.len() < PARK_MIN_ENTRIES {
            hot.append(entries);
            false
        } else {
            true
        }
    });
    hot.sort_by(|a, b| (&a.key_id, a.day).cmp(&(&b.key_id, b.day)));
    (hot, parked)
}

/// The name of a buffer's parked items: a digest of its fresh deliveries' ids, in any order, so that
/// writing the same buffer again writes the same items.
#[must_use]
pub fn buffer_digest(deliveries: &[&BatchDelta]) -> u64 {
    let mut ids: Vec<&str> = deliveries.iter().map(|d| d.batch_id().as_str()).collect();
    ids.sort_unstable();
    xxhash_rust::xxh3::xxh3_64(ids.join("\n").as_bytes())
}

/// Usage parked by the realtime path, as reconcile reads it: the entries, and the handles of the items
/// that hold them (to clear them once the day items hold the authoritative counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkedUsage {
    /// One entry per key and day, the sum of its parked entries (their latest `last_used`), sorted by
    /// key then day: a large day's millions of parked calls take the memory of its distinct key days.
    pub entries: Vec<DayDelta>,
    /// The store's handles of the items read.
    pub handles: Vec<String>,
}

/// Sums parked entries per key and day as they are read, item by item.
#[derive(Debug, Default)]
pub struct ParkedAggregate {
    by_key_day: BTreeMap<(KeyId, Day), (Tally, DateTime<Utc>)>,
    handles: Vec<String>,
    entries_read: u64,
}

impl ParkedAggregate {
    /// Adds one parked item: its handle and its entries.
    pub fn add_item(&mut self, handle: String, entries: impl IntoIterator<Item = DayDelta>) {
        self.handles.push(handle);
        for entry in entries {
            self.add_entry(entry);
        }
    }

    /// Adds one entry (of an item whose handle is added on its own, see [`Self::add_handle`]).
    pub fn add_entry(&mut self, entry: DayDelta) {
        self.entries_read += 1;
        self.sum(entry);
    }

    fn sum(&mut self, entry: DayDelta) {
        let slot =
            self.by_key_day.entry((entry.key_id, entry.day)).or_insert((Tally::default(), entry.last_used));
        slot.0.add(entry.tally);
        slot.1 = slot.1.max(entry.last_used);
    }

    /// Adds the handle of an item whose entries are added one by one.
    pub fn add_handle(&mut self, handle: String) {
        self.handles.push(handle);
    }

    /// Merges another aggregate (another bucket's) into this one.
    pub fn merge(&mut self, other: Self) {
        self.handles.extend(other.handles);
        self.entries_read += other.entries_read;
        for ((key_id, day), (tally, last_used)) in other.by_key_day {
            self.sum(DayDelta { key_id, day, tally, last_used });
        }
    }

    /// Entries read so far (one per key, day and item).
    #[must_use]
    pub fn entries_read(&self) -> u64 {
        self.entries_read
    }

    /// The usage read, one entry per key and day.
    #[must_use]
    pub fn finish(self) -> ParkedUsage {
        ParkedUsage {
            entries: self
                .by_key_day
                .into_iter()
                .map(|((key_id, day), (tally, last_used))| DayDelta { key_id, day, tally, last_used })
                .collect(),
            handles: self.handles,
        }
    }
}

impl ParkedUsage {
    /// Each key's parked usage, all its days summed (the latest `last_used`), in key order.
    #[must_use]
    pub fn per_key(&self) -> BTreeMap<KeyId, crate::UsageTotals> {
        let mut keys: BTreeMap<KeyId, crate::UsageTotals> = BTreeMap::new();
        for entry in &self.entries {
            let totals = keys.entry(entry.key_id.clone()).or_default();
            totals.tally.add(entry.tally);
            totals.last_used = totals.last_used.max(Some(entry.last_used));
        }
        keys
    }
}

/// Days with the parked usage of their keys and days added in (to `tally`, and to `open`: it is
/// provisional too): what a reader of the counters sees. An entry whose day has no item becomes one.
/// Sorted by key, then day.
#[must_use]
pub fn with_parked(items: Vec<crate::DayUsage>, parked: &[DayDelta]) -> Vec<crate::DayUsage> {
    let mut merged: BTreeMap<(KeyId, Day), crate::DayUsage> =
        items.into_iter().map(|item| ((item.key_id.clone(), item.day), item)).collect();
    for entry in parked {
        let item = merged
            .entry((entry.key_id.clone(), entry.day))
            .or_insert_with(|| crate::DayUsage::empty(entry.key_id.clone(), entry.day));
        item.tally.add(entry.tally);
        item.open.add(entry.tally);
        item.last_used = item.last_used.max(Some(entry.last_used));
    }
    merged.into_values().collect()
}

/// What applying a buffer of deliveries did, and what it costs in DynamoDB's capacity units (the
/// SQLite store reports what the DynamoDB store would have consumed for the same buffer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Deliveries counted by this call.
    pub deliveries_applied: usize,
    /// Deliveries found marked already (a redelivery, or a retried invocation), not counted again.
    pub deliveries_already_applied: usize,
    /// Marker sets written.
    pub marker_writes: usize,
    /// Write units of those marker writes (each by the larger of the set's size before and after).
    pub marker_write_units: u64,
    /// Key days written directly: each into its key's open usage, by the key's one write.
    pub key_days_written: usize,
    /// Keys read to learn whether they exist (keys known from earlier buffers are not read again).
    pub keys_read: usize,
    /// Key days parked (a single call in the buffer), and the parked items written for them.
    pub parked_entries: usize,
    /// See `parked_entries`.
    pub parked_writes: usize,
    /// Write units of those parked items.
    pub parked_write_units: u64,
    /// Keys that do not exist, with the usage that was therefore not counted. No item is created for
    /// them; the caller reports their usage as rejected.
    pub unknown_keys: BTreeMap<KeyId, Tally>,
    /// Key items written: one update per key with directly written usage, adding it to the key's
    /// open days and lifetime totals at once (CONTRACTS.md §2).
    pub key_writes: usize,
    /// Key writes repeated without `lastUsed` because the key had seen a later call (a conditional
    /// write that fails still consumes a write unit).
    pub key_last_used_rewrites: usize,
    /// Usage of deliveries that were marked but whose counters could not be written (the store failed
    /// midway): realtime drift that the nightly reconcile heals.
    pub not_applied: Tally,
    /// Why `not_applied` is not zero.
    pub failure: Option<String>,
    /// Alert thresholds this buffer's usage reached, each claimed once per customer and month: the
    /// caller announces them.
    pub alerts: Vec<crate::alerts::UsageAlert>,
    /// Customers whose hard quota this buffer's usage took past its last call: already marked.
    pub quota_refusals: Vec<crate::alerts::QuotaRefusalMark>,
    /// Quota ledger items written (one per customer with a quota and usage in the buffer).
    pub quota_writes: usize,
}

impl ApplyReport {
    /// Whether every delivery had been applied before.
    #[must_use]
    pub fn was_duplicate(&self) -> bool {
        self.deliveries_applied == 0 && self.deliveries_already_applied > 0
    }

    /// Items written: marker sets, key items and parked items.
    #[must_use]
    pub fn items_written(&self) -> usize {
        self.marker_writes
            + self.parked_writes
            + self.key_writes
            + self.key_last_used_rewrites
            + self.quota_writes
    }

    /// DynamoDB write request units consumed.
    #[must_use]
    pub fn write_units(&self) -> u64 {
        let key_items =
            (self.key_writes + self.key_last_used_rewrites) as u64 * capacity::KEY_ITEM_WRITE_UNITS;
        // A ledger item (customer, month, total, thresholds sent) is well under 1 KB: one unit each.
        self.marker_write_units + self.parked_write_units + key_items + self.quota_writes as u64
    }

    /// DynamoDB read request units consumed (strongly consistent reads of small items: one each).
    #[must_use]
    pub fn read_units(&self) -> u64 {
        self.keys_read as u64
    }

    /// Counts one parked item written, holding `entries` key days.
    pub fn count_parked_item(&mut self, entries: usize) {
        self.parked_entries += entries;
        self.parked_writes += 1;
        self.parked_write_units += capacity::write_units(capacity::parked_item_bytes(entries));
    }

    /// Adds another report's counts.
    pub fn add(&mut self, other: Self) {
        self.deliveries_applied += other.deliveries_applied;
        self.deliveries_already_applied += other.deliveries_already_applied;
        self.marker_writes += other.marker_writes;
        self.marker_write_units += other.marker_write_units;
        self.key_days_written += other.key_days_written;
        self.keys_read += other.keys_read;
        self.parked_entries += other.parked_entries;
        self.parked_writes += other.parked_writes;
        self.parked_write_units += other.parked_write_units;
        self.key_writes += other.key_writes;
        self.key_last_used_rewrites += other.key_last_used_rewrites;
        for (key, tally) in other.unknown_keys {
            self.unknown_keys.entry(key).or_default().add(tally);
        }
        self.not_applied.add(other.not_applied);
        self.alerts.extend(other.alerts);
        self.quota_refusals.extend(other.quota_refusals);
        self.quota_writes += other.quota_writes;
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }
}

/// DynamoDB's capacity rules as they apply to the counters (on-demand: a write request unit per 1 KB
/// of the item written, the larger of before and after for an update; a strongly consistent read unit
/// per 4 KB read).
pub mod capacity {
    /// Bytes of an `ApiKeys` item as a Scan reads it whole (see [`KEY_ITEM_WRITE_UNITS`]): its
    /// record, and today's and yesterday's open days.
    pub const KEY_ITEM_BYTES: u64 = 600 + 2 * OPEN_DAY_BYTES;

    /// Read units of strongly consistent reads of `bytes` (a unit per 4 KB).
    #[must_use]
    pub fn read_units(bytes: u64) -> u64 {
        bytes.div_ceil(4096)
    }

    /// Write units of one key item update: an `ApiKeys` item (id, hash, customer, plan, name, times,
    /// lifetime, imported and parked counters) is 300–700 bytes, and each open day adds at most
    /// [`OPEN_DAY_BYTES`]: with today's and yesterday's open (the nightly run closes them), under
    /// one write unit's kilobyte.
    pub const KEY_ITEM_WRITE_UNITS: u64 = 1;

    /// Bytes of one open day on a key item: four attributes named `<s|f|u|t>#YYYY-MM-DD` (12 bytes
    /// each), three counts of up to 8 bytes and a 24-byte `lastUsed`.
    pub const OPEN_DAY_BYTES: u64 = 4 * 12 + 3 * 8 + 24;

    /// Bytes of a marker set item holding `ids` delivery digests: the key attributes, the TTL, and a
    /// number set whose members take about 11 bytes each (a 64-bit number has up to 20 digits,
    /// stored as about one byte per two digits plus one).
    #[must_use]
    pub fn marker_item_bytes(ids: usize) -> u64 {
        70 + 11 * ids as u64
    }

    /// Write units of a write of an item of `bytes`.
    #[must_use]
    pub fn write_units(bytes: u64) -> u64 {
        bytes.div_ceil(1024).max(1)
    }

    /// Bytes of a parked item holding `entries` key days (key id, three counts and `lastUsed` as text,
    /// about 40 bytes each) besides its key attributes, `parkedAt` and TTL (about 112 bytes).
    #[must_use]
    pub fn parked_item_bytes(entries: usize) -> u64 {
        parked_items_bytes(1, entries as u64)
    }

    /// Bytes of `items` parked items holding `entries` key days between them.
    #[must_use]
    pub fn parked_items_bytes(items: u64, entries: u64) -> u64 {
        112 * items + 40 * entries
    }

    /// Write units of adding `added` digests to a marker set that held `before`.
    #[must_use]
    pub fn marker_write_units(before: usize, added: usize) -> u64 {
        write_units(marker_item_bytes(before + added))
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
    fn parked_entries_are_summed_per_key_and_day_as_they_are_read() {
        let mut aggregate = ParkedAggregate::default();
        aggregate.add_item(
            "item-1".into(),
            [
                delta("aaaaaaaaaaaa", "2026-11-30", 1, "2026-11-30T10:00:00Z"),
                delta("bbbbbbbbbbbb", "2026-11-30", 1, "2026-11-30T11:00:00Z"),
            ],
        );
        let mut other = ParkedAggregate::default();
        other.add_item(
            "item-2".into(),
            [
                delta("aaaaaaaaaaaa", "2026-11-30", 1, "2026-11-30T09:00:00Z"),
                delta("aaaaaaaaaaaa", "2026-12-01", 1, "2026-12-01T00:00:01Z"),
            ],
        );
        aggregate.merge(other);
        let parked = aggregate.finish();
        assert_eq!(parked.handles, ["item-1", "item-2"]);
        assert_eq!(
            parked.entries,
            [
                delta("aaaaaaaaaaaa", "2026-11-30", 2, "2026-11-30T10:00:00Z"),
                delta("aaaaaaaaaaaa", "2026-12-01", 1, "2026-12-01T00:00:01Z"),
                delta("bbbbbbbbbbbb", "2026-11-30", 1, "2026-11-30T11:00:00Z"),
            ]
        );
        let per_key = parked.per_key();
        let a = &per_key[&KeyId::parse("aaaaaaaaaaaa").unwrap()];
        assert_eq!(
            (a.tally.usage_count, a.last_used),
            (3, Some(parse_instant("2026-12-01T00:00:01Z").unwrap()))
        );
    }

    #[test]
    fn entries_are_merged_and_sorted_by_key_then_day() {
        let batch = BatchDelta::new(
            BatchId::from_digest(&[1, 2]),
            MarkerSlot { minute: 0, shard: 0 },
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
