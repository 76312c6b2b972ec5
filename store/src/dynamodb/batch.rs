//! Applying a buffer of deliveries: each delivery marked once in its slot's set, then one plain update
//! per key and day (CONTRACTS.md §8; the design and its measured cost are in ARCHITECTURE.md).

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryFutureExt};
use meter_model::batch::{MARKER_TTL, MarkerSlot, buffer_digest, capacity, merge_days, split_parked};
use meter_model::time::format_instant;
use meter_model::{ApplyReport, BatchDelta, Day, DayDelta, KeyId, StoreError, Tally, UsageWriter};

use super::error::{WriteFailure, build_error, store_error, table_missing};
use super::item::{corrupt, n, req_s, s};
use super::{
    COUNTER_WRITE_CONCURRENCY, DynamoStore, MARKER_PARTITION_PREFIX, MAX_BATCH_GET_KEYS, TTL_ATTRIBUTE,
    UNPROCESSED_RETRY, pause_for_unprocessed,
};

/// How a slot's marker write went.
enum Marked {
    /// The digests the set held before this write. `uncertain`: an earlier attempt of the same write
    /// may have landed, so a digest found here may be this call's own mark rather than a
    /// redelivery's; such deliveries are reported as not applied, never silently skipped.
    Before { set: HashSet<u64>, uncertain: bool },
    /// The write failed: none of the slot's deliveries is counted by this call. `ambiguous`: it may
    /// have landed anyway, so repeating the call could not tell its deliveries from redeliveries.
    Failed { err: StoreError, ambiguous: bool },
}

impl DynamoStore {
    /// Which of `ids` exist, read consistently in batches of 100.
    async fn existing_keys(&self, ids: &[&KeyId]) -> Result<HashSet<KeyId>, StoreError> {
        let mut existing = HashSet::new();
        for group in ids.chunks(MAX_BATCH_GET_KEYS) {
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(group.iter().map(|id| Self::key_of(id)).collect()))
                .projection_expression("id")
                .consistent_read(true)
                .build()
                .map_err(|e| build_error("look up keys", e))?;
            let mut pauses = UNPROCESSED_RETRY.pauses();
            loop {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.tables.api_keys, request)
                    .send()
                    .await
                    .map_err(|e| table_missing(store_error("look up keys", e), &self.tables.api_keys))?;
                for item in out.responses().and_then(|r| r.get(&self.tables.api_keys)).into_iter().flatten() {
                    existing.insert(KeyId::parse(req_s(item, "id")?).map_err(|e| corrupt(e.to_string()))?);
                }
                match out.unprocessed_keys.and_then(|mut u| u.remove(&self.tables.api_keys)) {
                    Some(rest) if !rest.keys().is_empty() => {
                        pause_for_unprocessed(&mut pauses, "look up keys").await?;
                        request = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(existing)
    }

    /// Adds `digests` to the slot's set and returns what the set held before: one atomic write for
    /// every delivery of the slot in this buffer, and a digest found in the old set is a redelivery
    /// (or, after an attempt that may have landed, possibly this call's own mark: see [`Marked`]).
    async fn mark(&self, slot: MarkerSlot, digests: &[u64], applied_at: DateTime<Utc>) -> Marked {
        let table = &self.tables.usage_counters;
        let mut uncertain = false;
        let sent = UNPROCESSED_RETRY
            .run(
                || {
                    self.single_shot
                        .update_item()
                        .table_name(table)
                        .key("keyId", s(&format!("{MARKER_PARTITION_PREFIX}{}", slot.name())))
                        .key("day", s("deliveries"))
                        .update_expression("ADD ids :ids SET #ttl = :ttl")
                        .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                        .expression_attribute_values(
                            ":ids",
                            AttributeValue::Ns(digests.iter().map(u64::to_string).collect()),
                        )
                        .expression_attribute_values(
                            ":ttl",
                            n((applied_at + MARKER_TTL).timestamp().unsigned_abs()),
                        )
                        // The whole old item: the set as it was, whether or not this write changed it.
                        .return_values(ReturnValue::AllOld)
                        .send()
                        .map_err(|e| WriteFailure::of("mark deliveries", table, e))
                },
                |failure: &WriteFailure| failure.err.is_retryable(),
                |failure, _| uncertain |= !failure.unapplied,
            )
            .await;
        match sent.map(|out| Self::old_marks(slot, out.attributes().and_then(|a| a.get("ids")))) {
            Ok(Ok(set)) => Marked::Before { set, uncertain },
            Ok(Err(err)) => Marked::Failed { err, ambiguous: true },
            Err(failure) => Marked::Failed { err: failure.err, ambiguous: uncertain || !failure.unapplied },
        }
    }

    /// The digests of a marker set's old value (none when the set did not exist).
    fn old_marks(slot: MarkerSlot, old: Option<&AttributeValue>) -> Result<HashSet<u64>, StoreError> {
        let Some(old) = old else { return Ok(HashSet::new()) };
        let members =
            old.as_ns().map_err(|_| corrupt(format!("marker set {} is not a number set", slot.name())))?;
        members
            .iter()
            .map(|m| m.parse::<u64>().map_err(|_| corrupt(format!("marker set {} holds {m:?}", slot.name()))))
            .collect()
    }

    /// Adds one key's day to its item and moves `lastUsed` forward. When the item has seen a later
    /// event, the conditional write fails and the counts are added alone. Returns the writes made.
    /// Each write is resent only while DynamoDB refuses it unapplied (throttling): an `ADD` resent
    /// after a timeout or a 500 could add twice, so that is reported as not applied instead, and
    /// reconcile settles it.
    async fn add_day(&self, delta: &DayDelta) -> Result<usize, StoreError> {
        let table = &self.tables.usage_counters;
        let update = |with_last_used: bool| {
            let mut request = self
                .single_shot
                .update_item()
                .table_name(table)
                .set_key(Some(Self::day_key(&delta.key_id, &delta.day.to_string())))
                .expression_attribute_values(":s", n(delta.tally.successful_calls))
                .expression_attribute_values(":f", n(delta.tally.failed_calls))
                .expression_attribute_values(":u", n(delta.tally.usage_count));
            request = if with_last_used {
                request
                    .update_expression(
                        "ADD successfulCalls :s, failedCalls :f, usageCount :u SET lastUsed = :t",
                    )
                    .condition_expression("attribute_not_exists(lastUsed) OR lastUsed < :t")
                    .expression_attribute_values(":t", s(&format_instant(delta.last_used)))
            } else {
                request.update_expression("ADD successfulCalls :s, failedCalls :f, usageCount :u")
            };
            request.send().map_err(|e| WriteFailure::of("add usage", table, e))
        };
        let add = |with_last_used: bool| {
            UNPROCESSED_RETRY.run(move || update(with_last_used), WriteFailure::worth_resending, |_, _| {})
        };
        match add(true).await.map_err(|failure| failure.err) {
            Ok(_) => Ok(1),
            Err(StoreError::ConditionFailed { .. }) => {
                add(false).await.map_err(|failure| failure.err)?;
                Ok(2)
            }
            Err(err) => Err(err),
        }
    }

    /// Adds a buffer's directly written usage of one key to its lifetime totals and moves its
    /// `lastUsed` forward, as [`Self::add_day`] does for a day item (and resent only as it is).
    /// Returns the writes made.
    async fn add_to_key(
        &self,
        key_id: &KeyId,
        tally: Tally,
        last_used: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let table = &self.tables.api_keys;
        let update = |with_last_used: bool| {
            let mut request = self
                .single_shot
                .update_item()
                .table_name(table)
                .set_key(Some(Self::key_of(key_id)))
                .expression_attribute_values(":s", n(tally.successful_calls))
                .expression_attribute_values(":f", n(tally.failed_calls))
                .expression_attribute_values(":u", n(tally.usage_count));
            // A key that vanished gets no stub item.
            request = if with_last_used {
                request
                    .update_expression(
                        "ADD successfulCalls :s, failedCalls :f, usageCount :u SET lastUsed = :t",
                    )
                    .condition_expression(
                        "attribute_exists(id) AND (attribute_not_exists(lastUsed) OR lastUsed < :t)",
                    )
                    .expression_attribute_values(":t", s(&format_instant(last_used)))
            } else {
                request
                    .update_expression("ADD successfulCalls :s, failedCalls :f, usageCount :u")
                    .condition_expression("attribute_exists(id)")
            };
            request.send().map_err(|e| WriteFailure::of("add usage to the key totals", table, e))
        };
        let add = |with_last_used: bool| {
            UNPROCESSED_RETRY.run(move || update(with_last_used), WriteFailure::worth_resending, |_, _| {})
        };
        match add(true).await.map_err(|failure| failure.err) {
            Ok(_) => Ok(1),
            Err(StoreError::ConditionFailed { .. }) => {
                match add(false).await.map_err(|failure| failure.err) {
                    Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(2),
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn mark_slot(
        &self,
        slot: MarkerSlot,
        digests: Vec<u64>,
        applied_at: DateTime<Utc>,
    ) -> (MarkerSlot, Marked) {
        (slot, self.mark(slot, &digests, applied_at).await)
    }

    /// The `index`th day item write of a call (the fault drill stops after its limit).
    async fn write_day(&self, index: usize, delta: DayDelta) -> (DayDelta, Result<usize, StoreError>) {
        if let Some(limit) = self.write_limit.filter(|limit| index >= *limit) {
            let drill = format!("fault drill: stopped after {limit} counter write(s)");
            return (
                delta,
                Err(StoreError::Retryable { operation: "add usage".into(), source: drill.into() }),
            );
        }
        let outcome = self.add_day(&delta).await;
        (delta, outcome)
    }

    pub(super) fn day_key(key: &KeyId, day: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("keyId".to_owned(), s(key.as_str())), ("day".to_owned(), s(day))])
    }
}

fn total(deliveries: &[&BatchDelta]) -> Tally {
    deliveries.iter().map(|d| d.total()).sum()
}

impl UsageWriter for DynamoStore {
    async fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        // A delivery twice in one buffer is one delivery.
        let mut seen = HashSet::new();
        let mut slots: BTreeMap<MarkerSlot, Vec<&BatchDelta>> = BTreeMap::new();
        for delivery in deliveries {
            if seen.insert(delivery.batch_id()) {
                slots.entry(delivery.slot()).or_default().push(delivery);
            } else {
                report.deliveries_already_applied += 1;
            }
        }
        // Owned inputs: the futures of the `Send` trait method must not borrow from their closure's
        // arguments.
        let requests: Vec<(MarkerSlot, Vec<u64>)> = slots
            .iter()
            .map(|(slot, members)| (*slot, members.iter().map(|d| d.batch_id().short_digest()).collect()))
            .collect();
        let marked: Vec<(MarkerSlot, Marked)> = futures::stream::iter(requests)
            .map(|(slot, digests)| self.mark_slot(slot, digests, applied_at))
            .buffer_unordered(COUNTER_WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut fresh: Vec<&BatchDelta> = Vec::new();
        let mut first_failure = None;
        let mut may_have_landed = false;
        for (slot, outcome) in marked {
            let members = &slots[&slot];
            match outcome {
                Marked::Before { set: before, uncertain } => {
                    let mut added = HashSet::new();
                    for delivery in members {
                        let digest = delivery.batch_id().short_digest();
                        if before.contains(&digest) && uncertain {
                            // Maybe a redelivery, maybe this call's own earlier attempt: reported,
                            // and the nightly reconcile settles it.
                            report.not_applied.add(delivery.total());
                            first_failure.get_or_insert_with(|| StoreError::Other {
                                operation: "mark deliveries".into(),
                                source:
                                    "a marker write was sent again after an attempt that may have landed; \
                                         its deliveries found marked are left to reconcile"
                                        .into(),
                            });
                        } else if before.contains(&digest) {
                            report.deliveries_already_applied += 1;
                        } else if added.insert(digest) {
                            fresh.push(delivery);
                        }
                    }
                    report.marker_writes += 1;
                    report.marker_write_units += capacity::marker_write_units(before.len(), added.len());
                }
                Marked::Failed { err, ambiguous } => {
                    report.not_applied.add(total(members));
                    may_have_landed |= ambiguous;
                    first_failure.get_or_insert(err);
                }
            }
        }
        if report.marker_writes == 0
            && !may_have_landed
            && let Some(err) = first_failure
        {
            return Err(err); // nothing marked: the whole call may be repeated
        }
        report.failure = first_failure.map(|e| meter_model::error_chain(&e));
        report.deliveries_applied = fresh.len();

        let days = merge_days(fresh.iter().copied());
        let unknown: Vec<&KeyId> = {
            let known = self.known_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut ids: Vec<&KeyId> =
                days.iter().map(|d| &d.key_id).filter(|k| !known.contains(*k)).collect();
            ids.dedup();
            ids
        };
        report.keys_read = unknown.len();
        let found = match self.existing_keys(&unknown).await {
            Ok(found) => found,
            Err(err) => {
                report.not_applied.add(total(&fresh));
                report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
                return Ok(report);
            }
        };
        let writable: Vec<&DayDelta> = {
            let mut known = self.known_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            known.extend(found);
            days.iter()
                .filter(|d| {
                    let exists = known.contains(&d.key_id);
                    if !exists {
                        report.unknown_keys.entry(d.key_id.clone()).or_default().add(d.tally);
                    }
                    exists
                })
                .collect()
        };
        let (hot, parked) = split_parked(writable.into_iter().cloned().collect());
        // Parked items are named after the buffer's fresh deliveries: the same buffer writes the same items.
        let buffer = buffer_digest(&fresh);
        let parks: Vec<((u64, Day), Vec<DayDelta>)> = parked.into_iter().collect();
        let parked_results: Vec<(Tally, usize, Result<(), StoreError>)> = futures::stream::iter(parks)
            .map(|((bucket, day), entries)| async move {
                let tally = entries.iter().map(|e| e.tally).sum();
                let result = self.park(bucket, day, buffer, &entries, applied_at).await;
                (tally, entries.len(), result)
            })
            .buffer_unordered(COUNTER_WRITE_CONCURRENCY)
            .collect()
            .await;
        for (tally, count, result) in parked_results {
            match result {
                Ok(()) => {
                    report.count_parked_item(count);
                }
                Err(err) => {
                    report.not_applied.add(tally);
                    report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
                }
            }
        }
        let writable: Vec<(usize, DayDelta)> = hot.into_iter().enumerate().collect();
        let writes: Vec<(DayDelta, Result<usize, StoreError>)> = futures::stream::iter(writable)
            .map(|(index, delta)| self.write_day(index, delta))
            .buffer_unordered(COUNTER_WRITE_CONCURRENCY)
            .collect()
            .await;
        // What landed in the day items moves the keys' totals: one write per key (CONTRACTS.md §2).
        let mut by_key: BTreeMap<KeyId, (Tally, DateTime<Utc>)> = BTreeMap::new();
        for (delta, outcome) in writes {
            match outcome {
                Ok(made) => {
                    report.day_items_written += 1;
                    report.last_used_rewrites += made - 1;
                    let key = by_key.entry(delta.key_id).or_insert((Tally::default(), delta.last_used));
                    key.0.add(delta.tally);
                    key.1 = key.1.max(delta.last_used);
                }
                Err(err) => {
                    report.not_applied.add(delta.tally);
                    report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
                }
            }
        }
        let key_writes: Vec<(Tally, Result<usize, StoreError>)> = futures::stream::iter(by_key)
            .map(|(key_id, (tally, last_used))| async move {
                (tally, self.add_to_key(&key_id, tally, last_used).await)
            })
            .buffer_unordered(COUNTER_WRITE_CONCURRENCY)
            .collect()
            .await;
        for (tally, outcome) in key_writes {
            match outcome {
                Ok(made) => {
                    report.key_total_writes += 1;
                    report.key_last_used_rewrites += made - 1;
                }
                Err(err) => {
                    report.key_totals_not_applied.add(tally);
                    report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
                }
            }
        }
        Ok(report)
    }
}
