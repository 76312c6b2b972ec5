//! Applying a delivery's batch exactly once: chunked transactions, each with its marker, then the
//! `lastUsed` advances.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use meter_model::batch::MARKER_TTL;
use meter_model::time::format_instant;
use meter_model::{ApplyReport, BatchDelta, DayDelta, KeyId, StoreError, Tally, UsageWriter};

use super::error::{build_error, cancellation_reasons, store_error, table_missing};
use super::item::{corrupt, n, req_s, s};
use super::{
    BATCH_PARTITION_PREFIX, DynamoStore, LAST_USED_CONCURRENCY, MAX_BATCH_GET_KEYS, MAX_TRANSACTION_ITEMS,
    TTL_ATTRIBUTE, UNPROCESSED_RETRY,
};

/// An item whose `lastUsed` is moved forward, by its primary key.
enum LastUsedItem {
    Key(HashMap<String, AttributeValue>),
    Day(HashMap<String, AttributeValue>),
}

/// One transaction's share of a batch: for each key, the run of its days that falls in this chunk.
struct Chunk<'a> {
    parts: Vec<(&'a KeyId, &'a [DayDelta])>,
}

/// Splits a batch into transactions of at most 99 counter items plus the marker. The plan covers every
/// key in the batch, known or not, in the batch's order, so a redelivery is chunked exactly the same
/// way whatever keys exist by then; a key's total item travels with each run of its days.
fn plan_chunks(batch: &BatchDelta) -> Vec<Chunk<'_>> {
    let capacity = MAX_TRANSACTION_ITEMS - 1;
    let mut chunks = Vec::new();
    let mut current = Chunk { parts: Vec::new() };
    let mut used = 0;
    for (key, days) in batch.by_key() {
        let mut rest = days;
        while !rest.is_empty() {
            if capacity - used < 2 {
                chunks.push(std::mem::replace(&mut current, Chunk { parts: Vec::new() }));
                used = 0;
            }
            let take = rest.len().min(capacity - used - 1);
            current.parts.push((key, &rest[..take]));
            used += 1 + take;
            rest = &rest[take..];
        }
    }
    if !current.parts.is_empty() {
        chunks.push(current);
    }
    chunks
}

fn add_counts(
    update: aws_sdk_dynamodb::types::builders::UpdateBuilder,
    tally: Tally,
) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    update
        .update_expression("ADD successfulCalls :s, failedCalls :f, usageCount :u")
        .expression_attribute_values(":s", n(tally.successful_calls))
        .expression_attribute_values(":f", n(tally.failed_calls))
        .expression_attribute_values(":u", n(tally.usage_count))
}

impl DynamoStore {
    /// Which of `ids` exist, read consistently in batches of 100.
    async fn existing_keys(&self, ids: &[&KeyId]) -> Result<std::collections::HashSet<KeyId>, StoreError> {
        let mut existing = std::collections::HashSet::new();
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
                        let Some(pause) = pauses.next() else {
                            return Err(StoreError::Retryable {
                                operation: "look up keys".into(),
                                source: "DynamoDB left keys unprocessed after every retry".into(),
                            });
                        };
                        tokio::time::sleep(pause).await;
                        request = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(existing)
    }

    fn marker(
        &self,
        batch: &BatchDelta,
        index: usize,
        of: usize,
        applied_at: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(&format!("{BATCH_PARTITION_PREFIX}{}", batch.batch_id())))
            .item("day", s(&format!("chunk#{index:04}")))
            .item("chunks", n(of as u64))
            .item("appliedAt", s(&format_instant(applied_at)))
            .item(TTL_ATTRIBUTE, AttributeValue::N((applied_at + MARKER_TTL).timestamp().to_string()))
            .condition_expression("attribute_not_exists(keyId)")
            .build()
            .map_err(|e| build_error("apply batch", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn key_total(&self, key: &KeyId, tally: Tally) -> Result<TransactWriteItem, StoreError> {
        let update = add_counts(
            Update::builder().table_name(&self.tables.api_keys).set_key(Some(Self::key_of(key))),
            tally,
        )
        .condition_expression("attribute_exists(id)")
        .build()
        .map_err(|e| build_error("apply batch", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(super) fn day_key(key: &KeyId, day: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("keyId".to_owned(), s(key.as_str())), ("day".to_owned(), s(day))])
    }

    fn day_counts(&self, delta: &DayDelta) -> Result<TransactWriteItem, StoreError> {
        let key = Self::day_key(&delta.key_id, &delta.day.to_string());
        let update = add_counts(
            Update::builder().table_name(&self.tables.usage_counters).set_key(Some(key)),
            delta.tally,
        )
        .build()
        .map_err(|e| build_error("apply batch", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Moves `lastUsed` forward (never back) on an item that exists. A maximum is idempotent, so
    /// this needs no marker: it runs after the counts, and again on any retry.
    async fn advance_last_used(&self, item: LastUsedItem, at: DateTime<Utc>) -> Result<(), StoreError> {
        let (table, key, exists) = match item {
            LastUsedItem::Key(key) => (&self.tables.api_keys, key, "id"),
            LastUsedItem::Day(key) => (&self.tables.usage_counters, key, "keyId"),
        };
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression("SET lastUsed = :t")
            .condition_expression(format!(
                "attribute_exists({exists}) AND (attribute_not_exists(lastUsed) OR lastUsed < :t)"
            ))
            .expression_attribute_values(":t", s(&format_instant(at)))
            .send()
            .await;
        match result.map_err(|e| store_error("advance lastUsed", e)) {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

impl UsageWriter for DynamoStore {
    async fn apply_batch(
        &self,
        batch: &BatchDelta,
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let ids: Vec<&KeyId> = batch.by_key().map(|(key, _)| key).collect();
        let known = self.existing_keys(&ids).await?;
        let chunks = plan_chunks(batch);
        for (index, chunk) in chunks.iter().enumerate() {
            let mut items = vec![self.marker(batch, index, chunks.len(), applied_at)?];
            for (key, days) in chunk.parts.iter().filter(|(key, _)| known.contains(*key)) {
                items.push(self.key_total(key, days.iter().map(|d| d.tally).sum())?);
                for day in *days {
                    items.push(self.day_counts(day)?);
                }
            }
            if items.len() == 1 {
                continue; // only unknown keys: nothing to count, nothing to mark
            }
            if self.chunk_limit.is_some_and(|limit| report.chunks_applied >= limit) {
                return Err(StoreError::Retryable {
                    operation: "apply batch".into(),
                    source: format!("fault drill: stopped after {} chunk(s)", report.chunks_applied).into(),
                });
            }
            let count = items.len();
            let sent = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
            match sent {
                Ok(_) => {
                    report.chunks_applied += 1;
                    report.items_written += count;
                }
                Err(err) => {
                    let reasons = cancellation_reasons("apply batch", err)
                        .map_err(|e| table_missing(e, &self.tables.usage_counters))?;
                    if reasons.first().and_then(Option::as_deref) == Some("ConditionalCheckFailed") {
                        report.chunks_already_applied += 1;
                    } else {
                        return Err(StoreError::Corrupt {
                            detail: format!(
                                "batch {} chunk {index}: a key item vanished while applying ({reasons:?})",
                                batch.batch_id()
                            ),
                        });
                    }
                }
            }
        }
        for (key, days) in batch.by_key().filter(|(key, _)| !known.contains(*key)) {
            report.unknown_keys.insert(key.clone(), days.iter().map(|d| d.tally).sum());
        }
        let mut advances = Vec::new();
        for (key, days) in batch.by_key().filter(|(key, _)| known.contains(*key)) {
            if let Some(latest) = days.iter().map(|d| d.last_used).max() {
                advances.push((LastUsedItem::Key(Self::key_of(key)), latest));
            }
            for day in days {
                advances.push((LastUsedItem::Day(Self::day_key(key, &day.day.to_string())), day.last_used));
            }
        }
        report.items_written += advances.len();
        let mut results = futures::stream::iter(advances)
            .map(|(item, at)| self.advance_last_used(item, at))
            .buffer_unordered(LAST_USED_CONCURRENCY);
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::{BatchId, Tally};

    fn batch(keys: usize, days_per_key: usize) -> BatchDelta {
        let start: meter_model::Day = "2026-11-01".parse().unwrap();
        let entries = (0..keys).flat_map(|k| {
            let key = KeyId::parse(&format!("key{k:05}")).unwrap();
            std::iter::successors(Some(start), |d| Some(d.succ())).take(days_per_key).map(move |day| {
                DayDelta {
                    key_id: key.clone(),
                    day,
                    tally: Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 },
                    last_used: Utc::now(),
                }
            })
        });
        BatchDelta::new(BatchId::from_digest(&[9]), entries.collect::<Vec<_>>())
    }

    fn items_of(chunk: &Chunk<'_>) -> usize {
        chunk.parts.iter().map(|(_, days)| 1 + days.len()).sum()
    }

    #[test]
    fn chunks_fit_a_transaction_with_the_marker_and_cover_every_day_once() {
        for (keys, days) in [(1, 1), (49, 1), (50, 1), (120, 2), (3, 150), (333, 3)] {
            let batch = batch(keys, days);
            let chunks = plan_chunks(&batch);
            assert!(
                chunks.iter().all(|c| items_of(c) < MAX_TRANSACTION_ITEMS),
                "room for the marker: {keys}x{days}"
            );
            let covered: Vec<&DayDelta> =
                chunks.iter().flat_map(|c| c.parts.iter().flat_map(|(_, d)| d.iter())).collect();
            assert_eq!(covered.len(), batch.days().len());
            assert!(covered.iter().zip(batch.days()).all(|(a, b)| *a == b), "in batch order");
        }
        // 49 keys of one day each take 98 items: one chunk. The 50th key starts a second one.
        assert_eq!(plan_chunks(&batch(49, 1)).len(), 1);
        assert_eq!(plan_chunks(&batch(50, 1)).len(), 2);
    }
}
