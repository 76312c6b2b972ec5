//! Applying a buffer of deliveries: each delivery marked once in its slot's set, then one plain update
//! per key, its open days and totals together (CONTRACTS.md §8; the design and its measured cost are
//! in ARCHITECTURE.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryFutureExt};
use meter_model::batch::{MARKER_TTL, MarkerSlot, buffer_digest, capacity, merge_days, split_parked};
use meter_model::ledger::CustomerQuota;
use meter_model::time::format_instant;
use meter_model::{ApplyReport, BatchDelta, Day, DayDelta, KeyId, StoreError, Tally, UsageWriter};

use super::error::{WriteFailure, build_error, store_error, table_missing};
use super::item::{corrupt, n, req_s, s};
use super::open;
use super::quota::{KEY_LOOKUP_PROJECTION, key_quota};
use super::{
    COUNTER_WRITE_CONCURRENCY, DynamoStore, MARKER_PARTITION_PREFIX, MAX_BATCH_GET_KEYS, TTL_ATTRIBUTE,
    UNPROCESSED_RETRY, pause_for_unprocessed,
};

/// One key's days of a buffer and how their write went: the writes made, or `None` for a key that
/// no longer exists.
type KeyWrite = (Vec<DayDelta>, Result<Option<usize>, StoreError>);

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
    /// Which of `ids` exist, with the quota each carries, read consistently in batches of 100.
    async fn existing_keys(
        &self,
        ids: &[&KeyId],
    ) -> Result<HashMap<KeyId, Option<Arc<CustomerQuota>>>, StoreError> {
        let mut existing = HashMap::new();
        for group in ids.chunks(MAX_BATCH_GET_KEYS) {
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(group.iter().map(|id| Self::key_of(id)).collect()))
                .projection_expression(KEY_LOOKUP_PROJECTION)
                .expression_attribute_names("#plan", "plan")
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
                    let id = KeyId::parse(req_s(item, "id")?).map_err(|e| corrupt(e.to_string()))?;
                    existing.insert(id, key_quota(item)?);
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

    /// Adds a buffer's directly written usage of one key to its open days and its lifetime totals,
    /// and moves its `lastUsed` (and each day's) forward: one write (CONTRACTS.md §2). When the key
    /// has seen a later call, the conditional write fails and the counts are added alone. Returns
    /// the writes made, or `None` when the key no longer exists (nothing was added).
    /// Each write is resent only while DynamoDB refuses it unapplied (throttling): an `ADD` resent
    /// after a timeout or a 500 could add twice, so that is reported as not applied instead, and
    /// reconcile settles it.
    async fn add_to_key(&self, key_id: &KeyId, days: &[DayDelta]) -> Result<Option<usize>, StoreError> {
        let table = &self.tables.api_keys;
        let tally: Tally = days.iter().map(|d| d.tally).sum();
        let last_used = days.iter().map(|d| d.last_used).max().unwrap_or_default();
        let update = |with_last_used: bool| {
            let mut request = self
                .single_shot
                .update_item()
                .table_name(table)
                .set_key(Some(Self::key_of(key_id)))
                .expression_attribute_values(":s", n(tally.successful_calls))
                .expression_attribute_values(":f", n(tally.failed_calls))
                .expression_attribute_values(":u", n(tally.usage_count));
            let mut adds = vec![
                "successfulCalls :s".to_owned(),
                "failedCalls :f".to_owned(),
                "usageCount :u".to_owned(),
            ];
            let mut sets = Vec::new();
            for (i, delta) in days.iter().enumerate() {
                // A zero counter is left out: a missing attribute reads as 0, and bytes cost units.
                for (kind, value) in [
                    ('s', delta.tally.successful_calls),
                    ('f', delta.tally.failed_calls),
                    ('u', delta.tally.usage_count),
                ] {
                    if value > 0 {
                        adds.push(format!("#{kind}{i} :{kind}{i}"));
                        request = request
                            .expression_attribute_names(
                                format!("#{kind}{i}"),
                                open::attribute(kind, delta.day),
                            )
                            .expression_attribute_values(format!(":{kind}{i}"), n(value));
                    }
                }
                // The day of the buffer's latest call is set when the key's `lastUsed` condition holds,
                // which makes it move forward; any other day's only where it has none yet, since
                // setting it could move it back. So a day's latest call may lag, never go back.
                let moves_forward = with_last_used && delta.last_used == last_used;
                sets.push(if moves_forward {
                    format!("#t{i} = :t{i}")
                } else {
                    format!("#t{i} = if_not_exists(#t{i}, :t{i})")
                });
                request = request
                    .expression_attribute_names(format!("#t{i}"), open::attribute('t', delta.day))
                    .expression_attribute_values(format!(":t{i}"), s(&format_instant(delta.last_used)));
            }
            // A key that vanished gets no stub item.
            request = if with_last_used {
                request
                    .update_expression(format!(
                        "ADD {} SET lastUsed = :t, {}",
                        adds.join(", "),
                        sets.join(", ")
                    ))
                    .condition_expression(
                        "attribute_exists(id) AND (attribute_not_exists(lastUsed) OR lastUsed < :t)",
                    )
                    .expression_attribute_values(":t", s(&format_instant(last_used)))
            } else {
                request
                    .update_expression(format!("ADD {} SET {}", adds.join(", "), sets.join(", ")))
                    .condition_expression("attribute_exists(id)")
            };
            request.send().map_err(|e| WriteFailure::of("add usage to the key", table, e))
        };
        let add = |with_last_used: bool| {
            UNPROCESSED_RETRY.run(move || update(with_last_used), WriteFailure::worth_resending, |_, _| {})
        };
        match add(true).await.map_err(|failure| failure.err) {
            Ok(_) => Ok(Some(1)),
            Err(StoreError::ConditionFailed { .. }) => {
                match add(false).await.map_err(|failure| failure.err) {
                    Ok(_) => Ok(Some(2)),
                    Err(StoreError::ConditionFailed { .. }) => Ok(None),
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

    /// The `index`th key write of a call (the fault drill stops after its limit).
    async fn write_key(
        &self,
        index: usize,
        days: Vec<DayDelta>,
    ) -> (Vec<DayDelta>, Result<Option<usize>, StoreError>) {
        if let Some(limit) = self.write_limit.filter(|limit| index >= *limit) {
            let drill = format!("fault drill: stopped after {limit} counter write(s)");
            return (
                days,
                Err(StoreError::Retryable { operation: "add usage".into(), source: drill.into() }),
            );
        }
        let key_id = days[0].key_id.clone();
        let outcome = self.add_to_key(&key_id, &days).await;
        (days, outcome)
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
                days.iter().map(|d| &d.key_id).filter(|k| !known.contains_key(*k)).collect();
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
        // Each existing key's day, with the quota it counts against (if any).
        let writable: Vec<(DayDelta, Option<Arc<CustomerQuota>>)> = {
            let mut known = self.known_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            known.extend(found);
            days.iter()
                .filter_map(|d| match known.get(&d.key_id) {
                    Some(quota) => Some((d.clone(), quota.clone())),
                    None => {
                        report.unknown_keys.entry(d.key_id.clone()).or_default().add(d.tally);
                        None
                    }
                })
                .collect()
        };
        let quota_days: Vec<(DayDelta, Option<Arc<CustomerQuota>>)> =
            writable.iter().filter(|(_, quota)| quota.is_some()).cloned().collect();
        let (hot, parked) = split_parked(writable.into_iter().map(|(day, _)| day).collect());
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
        // One write per key: its days of the buffer into its open days, and its totals.
        let per_key: Vec<(usize, Vec<DayDelta>)> =
            hot.chunk_by(|a, b| a.key_id == b.key_id).map(<[DayDelta]>::to_vec).enumerate().collect();
        let writes: Vec<KeyWrite> = futures::stream::iter(per_key)
            .map(|(index, days)| self.write_key(index, days))
            .buffer_unordered(COUNTER_WRITE_CONCURRENCY)
            .collect()
            .await;
        for (days, outcome) in writes {
            let tally: Tally = days.iter().map(|d| d.tally).sum();
            match outcome {
                Ok(Some(made)) => {
                    report.key_days_written += days.len();
                    report.key_writes += 1;
                    report.key_last_used_rewrites += made - 1;
                }
                Ok(None) => {
                    // Deleted since it was looked up: its usage is reported as a missing key's.
                    report.unknown_keys.entry(days[0].key_id.clone()).or_default().add(tally);
                }
                Err(err) => {
                    report.not_applied.add(tally);
                    report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
                }
            }
        }
        if !quota_days.is_empty() {
            self.settle_quotas(&quota_days, applied_at, &mut report).await;
        }
        Ok(report)
    }
}
