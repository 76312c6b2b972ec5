//! `UsageCounters` day items: reading them, and correcting them for reconcile without racing the
//! realtime writer.

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use meter_model::batch::{pending_bucket, with_parked};
use meter_model::time::{format_instant, parse_instant};
use meter_model::{
    CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayDelta, DayUsage, KeyId, Month, ParkedRefresh,
    ParkedUsage, ReconcileRun, RunLease, StoreError, UsageReader, UsageTotals,
};

use super::error::{build_error, cancellation_reasons, store_error, table_missing};
use super::item::{Item, corrupt, counters_equal, get_instant, n, req_s, s, tally_of};
use super::open;
use super::parked::{Folds, ParkedFilter};
use super::{
    DynamoStore, LEASE_PARTITION, RECONCILE_LEASE, RECONCILE_PARTITION, RUN_RECORD_TTL_DAYS, TTL_ATTRIBUTE,
};

/// Keys whose days are queried at once.
const QUERY_CONCURRENCY: usize = 16;

impl DynamoStore {
    /// A consistent Query of `UsageCounters` for the items of `partition` whose sort key lies in
    /// `from..=to`.
    pub(super) fn sort_key_range(
        &self,
        partition: &str,
        from: &str,
        to: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.tables.usage_counters)
            .key_condition_expression("keyId = :k AND #day BETWEEN :from AND :to")
            .expression_attribute_names("#day", "day")
            .expression_attribute_values(":k", s(partition))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .consistent_read(true)
    }

    /// A key's parked usage in `from..=to` that its `folds` leave out, per day: its bucket read, the
    /// other keys' entries left out.
    async fn own_parked(
        &self,
        key_id: &KeyId,
        from: Day,
        to: Day,
        folds: Folds,
    ) -> Result<Vec<DayDelta>, StoreError> {
        let folds = std::collections::HashMap::from([(key_id.clone(), folds)]);
        let filter = ParkedFilter { until: None, folds: Some(&folds) };
        let parked = self.parked_in_bucket(pending_bucket(key_id), from, to, filter).await?.finish();
        Ok(parked.entries.into_iter().filter(|e| &e.key_id == key_id).collect())
    }

    /// The days of `key` in `from..=to`, read consistently: its day items, the open days its key item
    /// holds (none for a key that does not exist) and the parked usage not folded into them.
    async fn key_days_with_parked(
        &self,
        key: &KeyId,
        from: Day,
        to: Day,
    ) -> Result<Vec<DayUsage>, StoreError> {
        let (open, folds) = match self.key_item(key, None, "read a key's open days").await? {
            Some(item) => (open::open_days(&item)?, open::folds(&item)?),
            None => Default::default(),
        };
        let items = open::with_open(key, self.day_items_of(key, from, to).await?, &open, from, to);
        Ok(with_parked(items, &self.own_parked(key, from, to, folds).await?))
    }

    /// The day items of `key` in `from..=to` (its open days left out), read consistently.
    async fn day_items_of(&self, key: &KeyId, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let mut items = self
            .sort_key_range(key.as_str(), &from.to_string(), &to.to_string())
            .into_paginator()
            .items()
            .send();
        let mut days = Vec::new();
        while let Some(item) = items.next().await {
            let item = item
                .map_err(|e| table_missing(store_error("read day items", e), &self.tables.usage_counters))?;
            days.push(day_usage_of(&item)?);
        }
        Ok(days)
    }
}

impl UsageReader for DynamoStore {
    async fn month_usage(&self, key_id: &KeyId, month: Month) -> Result<Vec<DayUsage>, StoreError> {
        // Day items sort by `YYYY-MM-DD`: the month is the range of its first to its last day.
        self.key_days_with_parked(key_id, month.first_day(), month.last_day()).await
    }

    async fn lifetime_usage(&self, key_id: &KeyId) -> Result<Vec<DayUsage>, StoreError> {
        self.key_days_with_parked(key_id, Day::EARLIEST, Day::LATEST).await
    }
}

fn day_usage_of(item: &Item) -> Result<DayUsage, StoreError> {
    Ok(DayUsage {
        key_id: KeyId::parse(req_s(item, "keyId")?).map_err(|e| corrupt(e.to_string()))?,
        day: req_s(item, "day")?
            .parse()
            .map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?,
        tally: tally_of(item)?,
        open: meter_model::Tally::default(),
        last_used: get_instant(item, "lastUsed")?,
        reconciled_at: get_instant(item, "reconciledAt")?,
    })
}

impl CounterCorrector for DynamoStore {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        // One Scan of the key items (their open days) and one Query of its own days per key: the
        // nightly read cost follows the number of keys and the range's items, never the table's
        // history, which a Scan of the day items would read whole every night. (Items exist only for
        // keys: realtime and reconcile never create one for an unknown key.)
        let mut keys = Vec::new();
        for item in self.key_items(None, "read the keys' open days").await? {
            let id = KeyId::parse(req_s(&item, "id")?).map_err(|e| corrupt(e.to_string()))?;
            keys.push((id, open::open_days(&item)?));
        }
        let mut out = Vec::new();
        let mut per_key = futures::stream::iter(keys)
            .map(|(key, open)| async move {
                let items = self.day_items_of(&key, from, to).await?;
                Ok::<_, StoreError>(open::with_open(&key, items, &open, from, to))
            })
            .buffer_unordered(QUERY_CONCURRENCY);
        while let Some(items) = per_key.next().await {
            out.extend(items?);
        }
        out.sort_by(|a, b| (&a.key_id, a.day).cmp(&(&b.key_id, b.day)));
        Ok(out)
    }

    async fn day_item(&self, key_id: &KeyId, day: Day) -> Result<Option<DayUsage>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::day_key(key_id, &day.to_string())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_missing(store_error("read day item", e), &self.tables.usage_counters))?;
        let item = out.item().map(day_usage_of).transpose()?;
        let open = match self.key_item(key_id, None, "read a key's open days").await? {
            Some(key_item) => open::open_days(&key_item)?,
            None => Default::default(),
        };
        Ok(open::with_open(key_id, item.into_iter().collect(), &open, day, day).pop())
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        let op = "correct day";
        let target = correction.target;
        // The day is its item plus its open day on the key item: each must still hold its part. With
        // only open usage read, the item is missing or holds zeros.
        const DAY_COUNTERS: [&str; 3] = ["successfulCalls", "failedCalls", "usageCount"];
        let expected_item = correction.expected.map(|whole| whole.saturating_sub(correction.expected_open));
        let (condition, mut values) = match expected_item {
            None => ("attribute_not_exists(keyId)".to_owned(), std::collections::HashMap::new()),
            Some(expected) => {
                let (clauses, values) = counters_equal(DAY_COUNTERS, expected, "e");
                let presence = if expected.is_zero() {
                    "attribute_not_exists(keyId) OR"
                } else {
                    "attribute_exists(keyId) AND"
                };
                (format!("{presence} ({clauses})"), values)
            }
        };
        values.insert(":s".into(), n(target.successful_calls));
        values.insert(":f".into(), n(target.failed_calls));
        values.insert(":u".into(), n(target.usage_count));
        values.insert(":r".into(), s(&format_instant(correction.at)));
        if let Some(last_used) = correction.last_used {
            values.insert(":lu".into(), s(&format_instant(last_used)));
        }
        let day = Update::builder()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::day_key(&correction.key_id, &correction.day.to_string())))
            .update_expression(format!(
                "SET successfulCalls = :s, failedCalls = :f, usageCount = :u, reconciledAt = :r{}",
                if correction.last_used.is_some() { ", lastUsed = :lu" } else { "" }
            ))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values));
        let day = day.build().map_err(|e| build_error(op, e))?;
        // The key's totals move by what the day moves and its open day closes, in the same
        // transaction (CONTRACTS.md §2); its condition also keeps an item from being created for a
        // key that does not exist.
        let delta = correction.delta();
        let signed = |value: i128| AttributeValue::N(value.to_string());
        let names = ['s', 'f', 'u', 't'].map(|kind| open::attribute(kind, correction.day));
        let (open_clauses, mut values) = counters_equal(["#os", "#of", "#ou"], correction.expected_open, "o");
        values.insert(":ds".into(), signed(delta.successful_calls));
        values.insert(":df".into(), signed(delta.failed_calls));
        values.insert(":du".into(), signed(delta.usage_count));
        // Folding parked calls marks them on the key in the same write (CONTRACTS.md §2).
        let fold = correction.folded_until.map(|until| {
            values.insert(":pf".into(), s(&format_instant(until)));
            "SET #pf = :pf "
        });
        let mut key = Update::builder()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(&correction.key_id)))
            .update_expression(format!(
                "{}ADD successfulCalls :ds, failedCalls :df, usageCount :du REMOVE #os, #of, #ou, #ot",
                fold.unwrap_or_default()
            ))
            .condition_expression(format!("attribute_exists(id) AND {open_clauses}"))
            .set_expression_attribute_values(Some(values));
        if fold.is_some() {
            key = key.expression_attribute_names("#pf", open::fold_attribute(correction.day));
        }
        for (placeholder, name) in ["#os", "#of", "#ou", "#ot"].into_iter().zip(names) {
            key = key.expression_attribute_names(placeholder, name);
        }
        let key = key.build().map_err(|e| build_error(op, e))?;
        let items = vec![
            TransactWriteItem::builder().update(day).build(),
            TransactWriteItem::builder().update(key).build(),
        ];
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => {}
            Err(err) => {
                let reasons = cancellation_reasons(op, err)
                    .map_err(|e| table_missing(e, &self.tables.usage_counters))?;
                let failed =
                    |i: usize| reasons.get(i).and_then(Option::as_deref) == Some("ConditionalCheckFailed");
                // The key's condition fails when it is gone, or when its open day moved.
                let key_gone = || async {
                    Ok::<_, StoreError>(self.key_item(&correction.key_id, Some("id"), op).await?.is_none())
                };
                return if failed(1) && key_gone().await? {
                    Ok(CorrectionOutcome::UnknownKey)
                } else if failed(0) || failed(1) {
                    Ok(CorrectionOutcome::Changed)
                } else {
                    Err(StoreError::Other {
                        operation: op.into(),
                        source: format!("transaction cancelled: {reasons:?}").into(),
                    })
                };
            }
        }
        if let Some(last_used) = correction.last_used {
            // Forward only; a failed condition means the key has seen a later call already.
            let moved = self
                .client
                .update_item()
                .table_name(&self.tables.api_keys)
                .set_key(Some(Self::key_of(&correction.key_id)))
                .update_expression("SET lastUsed = :t")
                .condition_expression(
                    "attribute_exists(id) AND (attribute_not_exists(lastUsed) OR lastUsed < :t)",
                )
                .expression_attribute_values(":t", s(&format_instant(last_used)))
                .send()
                .await
                .map_err(|e| store_error(op, e));
            match moved {
                Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
                // The counts are corrected; repeating the call would find them so and stop. The
                // key's lastUsed moves with its next call or recount.
                Err(err) => tracing::warn!(
                    key_id = %correction.key_id,
                    error = %meter_model::error_chain(&err),
                    "corrected a day, but could not move the key's lastUsed"
                ),
            }
        }
        Ok(CorrectionOutcome::Applied)
    }

    async fn refresh_key_totals(&self, key_id: &KeyId) -> Result<Option<UsageTotals>, StoreError> {
        let op = "recount key totals";
        let Some(item) = self.key_item(key_id, None, op).await? else {
            return Ok(None);
        };
        // The day items, the parked usage the totals hold (the snapshot: the next parked refresh
        // moves them by whatever that lacks), and the usage counted before meter.
        let record = super::item::record_from_item(&item)?;
        let parked = super::parked::Snapshot::of(&item)?;
        let items = self.day_items_of(key_id, Day::EARLIEST, Day::LATEST).await?;
        let days = open::with_open(key_id, items, &open::open_days(&item)?, Day::EARLIEST, Day::LATEST);
        let totals = UsageTotals::of_days(&days)
            .plus(record.imported)
            .plus(UsageTotals { tally: parked.parked, last_used: parked.last_used });
        let mut update = self
            .client
            .update_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(key_id)))
            .expression_attribute_values(":s", n(totals.tally.successful_calls))
            .expression_attribute_values(":f", n(totals.tally.failed_calls))
            .expression_attribute_values(":u", n(totals.tally.usage_count))
            .condition_expression("attribute_exists(id)");
        update = match totals.last_used {
            Some(at) => update
                .update_expression(
                    "SET successfulCalls = :s, failedCalls = :f, usageCount = :u, lastUsed = :t",
                )
                .expression_attribute_values(":t", s(&format_instant(at))),
            None => update.update_expression("SET successfulCalls = :s, failedCalls = :f, usageCount = :u"),
        };
        match update.send().await.map_err(|e| store_error(op, e)) {
            Ok(_) => Ok(Some(totals)),
            Err(StoreError::ConditionFailed { .. }) => Ok(None),
            Err(err) => Err(table_missing(err, &self.tables.api_keys)),
        }
    }

    async fn refresh_parked_totals(&self) -> Result<ParkedRefresh, StoreError> {
        self.refresh_parked().await
    }

    async fn parked_usage_until(
        &self,
        from: Day,
        to: Day,
        until: Option<DateTime<Utc>>,
    ) -> Result<ParkedUsage, StoreError> {
        let filter = ParkedFilter { until, folds: None };
        Ok(self.parked_in_every_bucket(from, to, filter).await?.finish())
    }

    async fn clear_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        self.delete_parked(handles).await
    }

    async fn claim_reconcile_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<RunLease>, StoreError> {
        let op = "claim the reconcile lease";
        // ISO instants of one width compare as text; the TTL removes a lease long after it expired.
        let claimed = self
            .client
            .put_item()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(LEASE_PARTITION))
            .item("day", s(RECONCILE_LEASE))
            .item("holder", s(holder))
            .item("leaseUntil", s(&format_instant(until)))
            .item(
                TTL_ATTRIBUTE,
                AttributeValue::N((until + chrono::Duration::days(1)).timestamp().to_string()),
            )
            .condition_expression("attribute_not_exists(keyId) OR holder = :holder OR leaseUntil <= :now")
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":now", s(&format_instant(now)))
            .send()
            .await
            .map_err(|e| table_missing(store_error(op, e), &self.tables.usage_counters));
        match claimed {
            Ok(_) => Ok(None),
            Err(StoreError::ConditionFailed { .. }) => {
                let item = self
                    .client
                    .get_item()
                    .table_name(&self.tables.usage_counters)
                    .key("keyId", s(LEASE_PARTITION))
                    .key("day", s(RECONCILE_LEASE))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| store_error(op, e))?
                    .item
                    .ok_or_else(|| StoreError::Retryable {
                        operation: op.into(),
                        source: "the lease was released while it was claimed; claim it again".into(),
                    })?;
                let until = parse_instant(req_s(&item, "leaseUntil")?)
                    .map_err(|_| corrupt("the reconcile lease's leaseUntil is not a timestamp"))?;
                Ok(Some(RunLease { holder: req_s(&item, "holder")?.to_owned(), until }))
            }
            Err(err) => Err(err),
        }
    }

    async fn release_reconcile_lease(&self, holder: &str) -> Result<(), StoreError> {
        let released = self
            .client
            .delete_item()
            .table_name(&self.tables.usage_counters)
            .key("keyId", s(LEASE_PARTITION))
            .key("day", s(RECONCILE_LEASE))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await
            .map_err(|e| store_error("release the reconcile lease", e));
        match released {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn record_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        let record = serde_json::to_string(run)
            .map_err(|e| StoreError::Other { operation: "record run".into(), source: e.into() })?;
        let expires = run.started_at + chrono::Duration::days(RUN_RECORD_TTL_DAYS);
        self.client
            .put_item()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(RECONCILE_PARTITION))
            .item("day", s(&format!("{}#{}", format_instant(run.started_at), run.run_id)))
            .item("record", s(&record))
            .item(TTL_ATTRIBUTE, AttributeValue::N(expires.timestamp().to_string()))
            .send()
            .await
            .map_err(|e| table_missing(store_error("record run", e), &self.tables.usage_counters))?;
        Ok(())
    }
}
