//! `ApiKeys`: the [`KeyStore`] on DynamoDB, and the revocation epoch.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use meter_model::{ApiKeyRecord, HashedKey, KeyChange, KeyId, KeyStatus, KeyStore, Revocation, StoreError};

use super::error::{build_error, cancellation_reasons, store_error, table_missing};
use super::item::{Item, corrupt, get_n, item_from_record, n, record_from_item, req_s, s};
use super::{DynamoStore, HASHED_KEY_INDEX};

impl DynamoStore {
    /// A key item read consistently, whole or only `projection`'s attributes.
    pub(super) async fn key_item(
        &self,
        id: &KeyId,
        projection: Option<&str>,
        operation: &str,
    ) -> Result<Option<Item>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(id)))
            .set_projection_expression(projection.map(str::to_owned))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_missing(store_error(operation, e), &self.tables.api_keys))?;
        Ok(got.item)
    }

    /// Moves the revocation epoch by one; answers the new epoch. Every warm authorizer drops its
    /// cache when it sees the move.
    pub(super) async fn bump_revocation_epoch(&self) -> Result<u64, StoreError> {
        let bumped = self
            .client
            .update_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::epoch_key()))
            .update_expression("ADD epoch :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| {
                table_missing(store_error("bump revocation epoch", e), &self.tables.usage_counters)
            })?;
        bumped.attributes().map_or(Ok(0), |item| get_n(item, "epoch"))
    }

    /// Every key item, read with one consistent Scan page by page, whole or only `projection`'s
    /// attributes. An operator's or a job's read, never the request path's.
    pub(super) async fn key_items(
        &self,
        projection: Option<&str>,
        operation: &str,
    ) -> Result<Vec<Item>, StoreError> {
        self.key_items_where(projection, None, operation).await
    }

    /// [`key_items`](Self::key_items) that `filter` (an expression and its values) holds for.
    pub(super) async fn key_items_where(
        &self,
        projection: Option<&str>,
        filter: Option<(&str, HashMap<String, AttributeValue>)>,
        operation: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let (expression, values) = filter.map_or((None, None), |(e, v)| (Some(e.to_owned()), Some(v)));
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.tables.api_keys)
                .set_projection_expression(projection.map(str::to_owned))
                .set_filter_expression(expression.clone())
                .set_expression_attribute_values(values.clone())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| table_missing(store_error(operation, e), &self.tables.api_keys))?;
            items.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// The key's lifetime totals, which the counters' writers move with `ADD` (CONTRACTS.md §2).
const TOTALS: [&str; 3] = ["successfulCalls", "failedCalls", "usageCount"];

impl KeyStore for DynamoStore {
    async fn insert_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.tables.api_keys)
            .set_item(Some(item_from_record(record)))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match put.map_err(|e| store_error("insert key", e)) {
            Ok(_) => Ok(()),
            Err(StoreError::ConditionFailed { .. }) => {
                Err(StoreError::AlreadyExists { what: format!("key {}", record.id) })
            }
            Err(other) => Err(table_missing(other, &self.tables.api_keys)),
        }
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.key_item(id, None, "get key").await?.as_ref().map(record_from_item).transpose()
    }

    async fn find_key_by_hash(&self, hashed_key: &HashedKey) -> Result<Option<ApiKeyRecord>, StoreError> {
        let found = self
            .client
            .query()
            .table_name(&self.tables.api_keys)
            .index_name(HASHED_KEY_INDEX)
            .key_condition_expression("hashedKey = :h")
            .expression_attribute_values(":h", s(hashed_key.as_str()))
            .limit(2)
            .send()
            .await
            .map_err(|e| table_missing(store_error("find key by hash", e), &self.tables.api_keys))?;
        let ids = found.items().iter().map(|item| req_s(item, "id")).collect::<Result<Vec<_>, _>>()?;
        let id = match ids.as_slice() {
            [] => return Ok(None),
            [id] => KeyId::parse(id).map_err(|e| corrupt(e.to_string()))?,
            _ => return Err(corrupt("two keys share one hashedKey")),
        };
        // The index is eventually consistent; the item read by id is not, and is what decides.
        Ok(self.get_key(&id).await?.filter(|record| record.hashed_key == *hashed_key))
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut records = self
            .key_items(None, "list keys")
            .await?
            .iter()
            .map(record_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<Revocation, StoreError> {
        // Mark first, bump second: an authorizer that sees the new epoch re-reads a key that is
        // already revoked. Returning the old item gives both the previous status and the new item
        // without another read.
        let marked = self
            .client
            .update_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(id)))
            .update_expression("SET #status = :revoked, revokedAt = if_not_exists(revokedAt, :at)")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":revoked", s(KeyStatus::Revoked.as_str()))
            .expression_attribute_values(":at", s(&format_instant(at)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| match store_error("revoke", e) {
                StoreError::ConditionFailed { .. } => StoreError::NotFound { what: format!("key {id}") },
                other => table_missing(other, &self.tables.api_keys),
            })?;
        let before = marked
            .attributes()
            .map(record_from_item)
            .transpose()?
            .ok_or_else(|| corrupt(format!("revoking key {id} returned no previous item")))?;
        let was_already_revoked = before.status == KeyStatus::Revoked;
        let record =
            ApiKeyRecord { status: KeyStatus::Revoked, revoked_at: before.revoked_at.or(Some(at)), ..before };
        // Revoking a revoked key again moves nothing: every warm authorizer drops its cache when the
        // epoch moves.
        if was_already_revoked {
            return Ok(Revocation { record, was_already_revoked, epoch: self.revocation_epoch().await? });
        }
        let epoch = self.bump_revocation_epoch().await?;
        Ok(Revocation { record, was_already_revoked, epoch })
    }

    async fn revocation_epoch(&self) -> Result<u64, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::epoch_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                table_missing(store_error("read revocation epoch", e), &self.tables.usage_counters)
            })?;
        got.item().map_or(Ok(0), |item| get_n(item, "epoch"))
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<ApiKeyRecord, StoreError> {
        // Optimistic, and only the record's attributes that change: each is set (or removed) only if
        // it still holds what was read, and the lifetime totals move by their difference with `ADD`.
        // The counters' bookkeeping on the item (open days, parked snapshot) and the totals the
        // writers move meanwhile are never rewritten from a stale read.
        for _ in 0..UPDATE_ATTEMPTS {
            let raw = self
                .key_item(id, None, "update key")
                .await?
                .ok_or_else(|| StoreError::NotFound { what: format!("key {id}") })?;
            let before = record_from_item(&raw)?;
            let after = change.applied_to(&before);
            if after == before {
                return Ok(after);
            }
            let (old, new) = (item_from_record(&before), item_from_record(&after));
            let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
            names.sort();
            names.dedup();
            let mut update =
                self.client.update_item().table_name(&self.tables.api_keys).set_key(Some(Self::key_of(id)));
            let (mut sets, mut removes, mut adds, mut conditions) =
                (Vec::new(), Vec::new(), Vec::new(), vec!["attribute_exists(id)".to_owned()]);
            for (i, name) in names.into_iter().enumerate() {
                let (was, will) = (old.get(name), new.get(name));
                if was == will {
                    continue;
                }
                update = update.expression_attribute_names(format!("#a{i}"), name);
                if TOTALS.contains(&name.as_str()) {
                    let delta = i128::from(get_n(&new, name)?) - i128::from(get_n(&old, name)?);
                    adds.push(format!("#a{i} :d{i}"));
                    update = update
                        .expression_attribute_values(format!(":d{i}"), AttributeValue::N(delta.to_string()));
                    continue;
                }
                match will {
                    Some(value) => {
                        sets.push(format!("#a{i} = :n{i}"));
                        update = update.expression_attribute_values(format!(":n{i}"), value.clone());
                    }
                    None => removes.push(format!("#a{i}")),
                }
                match was {
                    Some(value) => {
                        conditions.push(format!("#a{i} = :o{i}"));
                        update = update.expression_attribute_values(format!(":o{i}"), value.clone());
                    }
                    None => conditions.push(format!("attribute_not_exists(#a{i})")),
                }
            }
            let mut expression = Vec::new();
            for (verb, parts) in [("SET", sets), ("REMOVE", removes), ("ADD", adds)] {
                if !parts.is_empty() {
                    expression.push(format!("{verb} {}", parts.join(", ")));
                }
            }
            let sent = update
                .update_expression(expression.join(" "))
                .condition_expression(conditions.join(" AND "))
                .send()
                .await;
            match sent.map_err(|e| store_error("update key", e)) {
                Ok(_) => return Ok(after),
                Err(StoreError::ConditionFailed { .. }) => {}
                Err(other) => return Err(table_missing(other, &self.tables.api_keys)),
            }
        }
        Err(StoreError::Retryable {
            operation: format!("update key {id}"),
            source: format!("the item changed {UPDATE_ATTEMPTS} times while being updated").into(),
        })
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: &ApiKeyRecord,
        grace_ends_at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let op = "rotate key";
        let before =
            self.get_key(old).await?.ok_or_else(|| StoreError::NotFound { what: format!("key {old}") })?;
        let refused =
            || StoreError::ConditionFailed { what: format!("key {old} is revoked or already rotated") };
        if before.status == KeyStatus::Revoked || before.grace_ends_at.is_some() {
            return Err(refused());
        }
        let put = Put::builder()
            .table_name(&self.tables.api_keys)
            .set_item(Some(item_from_record(new)))
            .condition_expression("attribute_not_exists(id)")
            .build()
            .map_err(|e| build_error(op, e))?;
        let end = Update::builder()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(old)))
            .update_expression("SET graceEndsAt = :end")
            .condition_expression(
                "attribute_exists(id) AND #status = :active AND attribute_not_exists(graceEndsAt)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s(KeyStatus::Active.as_str()))
            .expression_attribute_values(":end", s(&format_instant(grace_ends_at)))
            .build()
            .map_err(|e| build_error(op, e))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(end).build(),
        ];
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(ApiKeyRecord { grace_ends_at: Some(grace_ends_at), ..before }),
            Err(err) => {
                let reasons =
                    cancellation_reasons(op, err).map_err(|e| table_missing(e, &self.tables.api_keys))?;
                let failed =
                    |i: usize| reasons.get(i).and_then(Option::as_deref) == Some("ConditionalCheckFailed");
                if failed(0) {
                    Err(StoreError::AlreadyExists { what: format!("key {}", new.id) })
                } else if failed(1) {
                    Err(refused())
                } else {
                    Err(StoreError::Other {
                        operation: op.into(),
                        source: format!("transaction cancelled: {reasons:?}").into(),
                    })
                }
            }
        }
    }
}

/// Re-reads of an item that keeps changing under an update before it gives up.
const UPDATE_ATTEMPTS: usize = 5;
