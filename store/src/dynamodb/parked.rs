//! Parked usage: a buffer's key days with a single call, kept together in a few items per bucket of
//! keys (`#parked#<bucket>`, sort key `<day>#<digest of the buffer>`) instead of an item write each.
//! Readers add them in; reconcile clears them once the day items hold the authoritative counts.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use meter_model::batch::{PENDING_BUCKETS, ParkedAggregate};
use meter_model::time::format_instant;
use meter_model::{Day, DayDelta, KeyId, ParkedRefresh, StoreError, Tally, TallyDelta, UsageTotals};

use super::error::{store_error, table_missing};
use super::item::{corrupt, counters_equal, get_instant, get_n, n, req_s, s};
use super::{DynamoStore, TTL_ATTRIBUTE, UNPROCESSED_RETRY, pause_for_unprocessed};

/// Partition prefix of parked usage in `UsageCounters`; `#` cannot start a key id.
const PARKED_PARTITION_PREFIX: &str = "#parked#";

/// How long a parked item outlives its writing when no reconcile clears it: longer than any
/// reconcile range, so that only a deployment without its nightly job ever loses one from the
/// realtime view (the archive keeps the calls).
const PARKED_TTL: chrono::Duration = chrono::Duration::days(40);

/// Buckets read, and keys refreshed, at once.
const PARKED_READ_CONCURRENCY: usize = 16;

/// Writes of one key's parked snapshot before a refresh gives up on it (each failed one re-reads).
const SNAPSHOT_ATTEMPTS: u64 = 10;

/// What a refresh reads of a key item.
const SNAPSHOT_PROJECTION: &str = "id, parkedSuccessfulCalls, parkedFailedCalls, parkedUsageCount, lastUsed";

/// A key's folds, by day: the instant up to which its parked entries of that day are folded into
/// the day item (`p#<day>` on its item, [`super::open::folds`]).
pub(super) type Folds = BTreeMap<Day, DateTime<Utc>>;

/// How long a fold matters: every entry it covers was parked by then and is gone by its TTL (plus
/// the two days DynamoDB may take to delete an expired item). Older folds are removed.
const FOLD_LIFETIME: chrono::Duration = chrono::Duration::days(40 + 2);

/// Which parked usage a read takes: the items parked at or before `until` (all, without), and of
/// their entries those no fold of `folds` covers (all, without).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ParkedFilter<'a> {
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) folds: Option<&'a HashMap<KeyId, Folds>>,
}

impl ParkedFilter<'_> {
    /// Whether an entry of `key` on `day` in an item parked at `parked_at` (unknown for items parked
    /// before `parkedAt` was written: as old as can be) is folded already.
    fn folded(&self, key: &KeyId, day: Day, parked_at: Option<DateTime<Utc>>) -> bool {
        let folded_until = self.folds.and_then(|folds| folds.get(key)).and_then(|days| days.get(&day));
        folded_until.is_some_and(|until| parked_at.is_none_or(|at| at <= *until))
    }
}

/// A key item's parked snapshot: the parked usage its totals include, and its `lastUsed`.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) parked: Tally,
    pub(super) last_used: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// A key item's parked snapshot and `lastUsed`.
    pub(super) fn of(item: &super::item::Item) -> Result<Self, StoreError> {
        Ok(Self {
            parked: Tally {
                successful_calls: get_n(item, "parkedSuccessfulCalls")?,
                failed_calls: get_n(item, "parkedFailedCalls")?,
                usage_count: get_n(item, "parkedUsageCount")?,
            },
            last_used: get_instant(item, "lastUsed")?,
        })
    }
}

/// `DynamoDB`'s limit on the requests of one `BatchWriteItem`.
const MAX_BATCH_WRITE: usize = 25;

fn partition(bucket: u64) -> String {
    format!("{PARKED_PARTITION_PREFIX}{bucket:02}")
}

/// One entry a line: `key id, successful, failed, calls, lastUsed`, tab-separated.
fn encode(entries: &[DayDelta]) -> String {
    let mut text = String::with_capacity(entries.len() * 48);
    for e in entries {
        let t = e.tally;
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            e.key_id,
            t.successful_calls,
            t.failed_calls,
            t.usage_count,
            format_instant(e.last_used)
        ));
    }
    text
}

fn decode(day: Day, text: &str) -> Result<Vec<DayDelta>, StoreError> {
    text.lines()
        .map(|line| {
            let bad = || {
                corrupt(format!("parked entry {line:?} is not `key, successful, failed, calls, lastUsed`"))
            };
            let fields: Vec<&str> = line.split('\t').collect();
            let [key, s, f, u, at] = fields.as_slice() else { return Err(bad()) };
            let count = |v: &str| v.parse::<u64>().map_err(|_| bad());
            Ok(DayDelta {
                key_id: KeyId::parse(key).map_err(|_| bad())?,
                day,
                tally: Tally { successful_calls: count(s)?, failed_calls: count(f)?, usage_count: count(u)? },
                last_used: meter_model::time::parse_instant(at).map_err(|_| bad())?,
            })
        })
        .collect()
}

impl DynamoStore {
    /// Writes one parked item: `entries` of one bucket and day, named by `digest` (of the buffer's
    /// deliveries), so a repeated write of the same buffer writes the same item.
    pub(super) async fn park(
        &self,
        bucket: u64,
        day: Day,
        digest: u64,
        entries: &[DayDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(&partition(bucket)))
            .item("day", s(&format!("{day}#{digest:016x}")))
            .item("entries", s(&encode(entries)))
            .item("parkedAt", s(&format_instant(applied_at)))
            .item(TTL_ATTRIBUTE, n((applied_at + PARKED_TTL).timestamp().unsigned_abs()))
            .send()
            .await
            .map_err(|e| table_missing(store_error("park usage", e), &self.tables.usage_counters))?;
        Ok(())
    }

    /// The parked usage of one bucket in `from..=to` that `filter` takes, read consistently and summed
    /// per key and day as it is read; handles are `partition|sort key` (an item whose entries are all
    /// folded keeps its handle: it is still to be cleared).
    pub(super) async fn parked_in_bucket(
        &self,
        bucket: u64,
        from: Day,
        to: Day,
        filter: ParkedFilter<'_>,
    ) -> Result<ParkedAggregate, StoreError> {
        // `$` sorts right after `#`: every sort key of the last day.
        let mut items = self
            .sort_key_range(&partition(bucket), &from.to_string(), &format!("{to}$"))
            .into_paginator()
            .items()
            .send();
        let mut parked = ParkedAggregate::default();
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| {
                table_missing(store_error("read parked usage", e), &self.tables.usage_counters)
            })?;
            let sort_key = req_s(&item, "day")?;
            let day: Day = sort_key
                .split('#')
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?;
            let parked_at = get_instant(&item, "parkedAt")?;
            if filter.until.is_some_and(|until| parked_at.is_some_and(|at| at > until)) {
                continue;
            }
            let entries = decode(day, req_s(&item, "entries")?)?;
            parked.add_item(
                format!("{}|{sort_key}", partition(bucket)),
                entries.into_iter().filter(|e| !filter.folded(&e.key_id, e.day, parked_at)),
            );
        }
        Ok(parked)
    }

    /// [`CounterCorrector::refresh_parked_totals`](meter_model::CounterCorrector::refresh_parked_totals):
    /// every bucket read once, the keys' snapshots read in one Scan, and one conditional write per key
    /// whose parked usage changed.
    pub(super) async fn refresh_parked(&self) -> Result<ParkedRefresh, StoreError> {
        // The keys first: their folds say which parked entries their day items hold already.
        let (snapshots, folds) = self.parked_snapshots().await?;
        let filter = ParkedFilter { until: None, folds: Some(&folds) };
        let parked = self.parked_in_every_bucket(Day::EARLIEST, Day::LATEST, filter).await?;
        let parked_entries = parked.entries_read();
        let parked = parked.finish();
        let now = parked.per_key();
        self.remove_expired_folds(&folds).await?;
        let mut refresh = ParkedRefresh {
            parked_items: parked.handles.len() as u64,
            parked_entries,
            keys_scanned: snapshots.len() as u64,
            keys_parked: now.len() as u64,
            ..ParkedRefresh::default()
        };
        let mut changed: Vec<(KeyId, Snapshot, UsageTotals)> = Vec::new();
        for (key, snapshot) in &snapshots {
            let parked_now = now.get(key).copied().unwrap_or_default();
            if snapshot.parked != parked_now.tally {
                changed.push((key.clone(), snapshot.clone(), parked_now));
            }
        }
        let outcomes: Vec<Result<Option<u64>, StoreError>> = futures::stream::iter(changed)
            .map(|(key, snapshot, parked_now)| async move {
                self.set_parked_snapshot(&key, snapshot, parked_now).await
            })
            .buffer_unordered(PARKED_READ_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            if let Some(retries) = outcome? {
                refresh.keys_moved += 1;
                refresh.conflicts_retried += retries;
            }
        }
        Ok(refresh)
    }

    /// The parked usage of every bucket in `from..=to` that `filter` takes, the buckets read
    /// concurrently.
    pub(super) async fn parked_in_every_bucket(
        &self,
        from: Day,
        to: Day,
        filter: ParkedFilter<'_>,
    ) -> Result<ParkedAggregate, StoreError> {
        let mut buckets = futures::stream::iter(0..PENDING_BUCKETS)
            .map(|bucket| self.parked_in_bucket(bucket, from, to, filter))
            .buffer_unordered(PARKED_READ_CONCURRENCY);
        let mut parked = ParkedAggregate::default();
        while let Some(bucket) = buckets.next().await {
            parked.merge(bucket?);
        }
        Ok(parked)
    }

    /// Every key's parked snapshot and `lastUsed`, and its folds, by id: one Scan of `ApiKeys` (whole
    /// items: a fold's attribute is named by its day, and a Scan costs the items' size regardless).
    async fn parked_snapshots(
        &self,
    ) -> Result<(BTreeMap<KeyId, Snapshot>, HashMap<KeyId, Folds>), StoreError> {
        let mut snapshots = BTreeMap::new();
        let mut folds = HashMap::new();
        for item in self.key_items(None, "read the keys' parked snapshots").await? {
            let key = KeyId::parse(req_s(&item, "id")?).map_err(|e| corrupt(e.to_string()))?;
            let key_folds = super::open::folds(&item)?;
            if !key_folds.is_empty() {
                folds.insert(key.clone(), key_folds);
            }
            snapshots.insert(key, Snapshot::of(&item)?);
        }
        Ok((snapshots, folds))
    }

    /// Removes the folds no parked entry can need any more, so that key items do not grow by one a
    /// day: those [`FOLD_LIFETIME`] older than the newest fold any key holds (the last reconcile's;
    /// the store keeps no clock). Unconditional: a fold that old is never written again.
    async fn remove_expired_folds(&self, folds: &HashMap<KeyId, Folds>) -> Result<(), StoreError> {
        let Some(now) = folds.values().flat_map(|days| days.values()).max().copied() else {
            return Ok(());
        };
        let mut expired: Vec<(KeyId, Vec<Day>)> = Vec::new();
        for (key, days) in folds {
            let old: Vec<Day> =
                days.iter().filter(|(_, until)| **until + FOLD_LIFETIME < now).map(|(day, _)| *day).collect();
            if !old.is_empty() {
                expired.push((key.clone(), old));
            }
        }
        let removals: Vec<Result<(), StoreError>> = futures::stream::iter(expired)
            .map(|(key, days)| async move {
                let mut update = self
                    .client
                    .update_item()
                    .table_name(&self.tables.api_keys)
                    .set_key(Some(Self::key_of(&key)))
                    .condition_expression("attribute_exists(id)");
                let mut names = Vec::with_capacity(days.len());
                for (i, day) in days.iter().enumerate() {
                    names.push(format!("#p{i}"));
                    update = update
                        .expression_attribute_names(format!("#p{i}"), super::open::fold_attribute(*day));
                }
                let removed = update
                    .update_expression(format!("REMOVE {}", names.join(", ")))
                    .send()
                    .await
                    .map_err(|e| store_error("remove expired folds", e));
                match removed {
                    Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
                    Err(err) => Err(table_missing(err, &self.tables.api_keys)),
                }
            })
            .buffer_unordered(PARKED_READ_CONCURRENCY)
            .collect()
            .await;
        removals.into_iter().collect()
    }

    /// Sets one key's parked snapshot to `parked_now` and moves its totals by the difference, on
    /// condition that the snapshot is still `snapshot`; re-reads and tries again when it is not.
    /// `Some(re-reads)` when the totals moved, `None` when there was nothing to do (or no key).
    async fn set_parked_snapshot(
        &self,
        key: &KeyId,
        mut snapshot: Snapshot,
        parked_now: UsageTotals,
    ) -> Result<Option<u64>, StoreError> {
        let op = "refresh parked usage in the key totals";
        for rereads in 0..SNAPSHOT_ATTEMPTS {
            if snapshot.parked == parked_now.tally {
                return Ok(None);
            }
            let delta = TallyDelta::between(snapshot.parked, parked_now.tally);
            let signed = |value: i128| AttributeValue::N(value.to_string());
            let mut set = String::from(
                "SET parkedSuccessfulCalls = :ns, parkedFailedCalls = :nf, parkedUsageCount = :nu",
            );
            let mut condition = vec!["attribute_exists(id)".to_owned()];
            let mut update = self
                .client
                .update_item()
                .table_name(&self.tables.api_keys)
                .set_key(Some(Self::key_of(key)))
                .expression_attribute_values(":ns", n(parked_now.tally.successful_calls))
                .expression_attribute_values(":nf", n(parked_now.tally.failed_calls))
                .expression_attribute_values(":nu", n(parked_now.tally.usage_count))
                .expression_attribute_values(":ds", signed(delta.successful_calls))
                .expression_attribute_values(":df", signed(delta.failed_calls))
                .expression_attribute_values(":du", signed(delta.usage_count));
            // A snapshot never written reads as 0.
            let (unchanged, values) = counters_equal(
                ["parkedSuccessfulCalls", "parkedFailedCalls", "parkedUsageCount"],
                snapshot.parked,
                "o",
            );
            condition.push(unchanged);
            for (placeholder, value) in values {
                update = update.expression_attribute_values(placeholder, value);
            }
            if let Some(latest) = parked_now.last_used.filter(|at| Some(*at) > snapshot.last_used) {
                set.push_str(", lastUsed = :t");
                condition.push("(attribute_not_exists(lastUsed) OR lastUsed < :t)".to_owned());
                update = update.expression_attribute_values(":t", s(&format_instant(latest)));
            }
            let sent = update
                .update_expression(format!("{set} ADD successfulCalls :ds, failedCalls :df, usageCount :du"))
                .condition_expression(condition.join(" AND "))
                .send()
                .await
                .map_err(|e| store_error(op, e));
            match sent {
                Ok(_) => return Ok(Some(rereads)),
                Err(StoreError::ConditionFailed { .. }) => {
                    let item = self.key_item(key, Some(SNAPSHOT_PROJECTION), op).await?;
                    match item {
                        Some(item) => snapshot = Snapshot::of(&item)?,
                        None => return Ok(None),
                    }
                }
                Err(err) => return Err(table_missing(err, &self.tables.api_keys)),
            }
        }
        Err(StoreError::Retryable {
            operation: format!("{op} of key {key}"),
            source: format!("its item changed {SNAPSHOT_ATTEMPTS} times while being refreshed").into(),
        })
    }

    /// Deletes parked items by handle, 25 to a `BatchWriteItem`, asking again for what DynamoDB leaves
    /// unprocessed.
    pub(super) async fn delete_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        for group in handles.chunks(MAX_BATCH_WRITE) {
            let mut requests = Vec::with_capacity(group.len());
            for handle in group {
                let (pk, sk) = handle
                    .split_once('|')
                    .ok_or_else(|| corrupt(format!("{handle:?} is not a parked item")))?;
                let key = HashMap::from([("keyId".to_owned(), s(pk)), ("day".to_owned(), s(sk))]);
                let delete = DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map_err(|e| super::error::build_error("clear parked usage", e))?;
                requests.push(WriteRequest::builder().delete_request(delete).build());
            }
            let mut pauses = UNPROCESSED_RETRY.pauses();
            loop {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.tables.usage_counters, requests)
                    .send()
                    .await
                    .map_err(|e| {
                        table_missing(store_error("clear parked usage", e), &self.tables.usage_counters)
                    })?;
                match out.unprocessed_items.and_then(|mut u| u.remove(&self.tables.usage_counters)) {
                    Some(rest) if !rest.is_empty() => {
                        pause_for_unprocessed(&mut pauses, "clear parked usage").await?;
                        requests = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_named() {
        let day: Day = "2026-11-30".parse().unwrap();
        let entries = vec![DayDelta {
            key_id: KeyId::parse("0123456789ab").unwrap(),
            day,
            tally: Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 },
            last_used: meter_model::time::parse_instant("2026-11-30T10:00:00.123Z").unwrap(),
        }];
        assert_eq!(decode(day, &encode(&entries)).unwrap(), entries);
        let err = decode(day, "0123456789ab\tone\t0\t1\t2026-11-30T10:00:00Z").unwrap_err();
        assert!(err.to_string().contains("not `key, successful"), "{err}");
    }
}
