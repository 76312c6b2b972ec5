//! Plan quotas on DynamoDB (ARCHITECTURE.md, "Plan quotas and usage alerts"): after a buffer's
//! deliveries are marked and counted, the fresh billable calls of keys that carry a quota move their
//! customer's ledger item (`#quota#<customer>` / `<YYYY-MM>` in `UsageCounters`) with one `ADD` each;
//! each threshold is claimed by a conditional `ADD` to its `sent` set, and past a hard quota the
//! customer's keys are marked and the revocation epoch moves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use futures::TryFutureExt;
use meter_model::alerts::{QuotaRefusalMark, UsageAlert};
use meter_model::quota::QuotaTerms;
use meter_model::{ApplyReport, DayDelta, Email, KeyId, Month, PlanName, StoreError};

use super::error::{WriteFailure, store_error, table_missing};
use super::item::{Item, corrupt, get_n, get_s, n, req_s, s};
use super::{DynamoStore, TTL_ATTRIBUTE, UNPROCESSED_RETRY};

/// Partition prefix of the ledger items; `#` cannot start a key id.
const QUOTA_PARTITION_PREFIX: &str = "#quota#";

/// Ledger items outlive their month by a year (the over-run report reads them), then expire.
const LEDGER_TTL_DAYS: i64 = 400;

/// What a key look-up tells about a key's quota: the customer and plan it counts for, and the terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyQuota {
    pub(super) customer: Email,
    pub(super) plan: Option<PlanName>,
    pub(super) terms: QuotaTerms,
}

/// The attributes the key look-up projects (the look-up the transformer makes anyway): the id and,
/// where the key carries a quota, what counting it needs.
pub(super) const KEY_LOOKUP_PROJECTION: &str = "id, userEmail, #plan, quotaCalls, quotaMode, quotaAlerts";

/// The quota a looked-up key item carries, if any.
pub(super) fn key_quota(item: &Item) -> Result<Option<Arc<KeyQuota>>, StoreError> {
    let Some(mode) = get_s(item, "quotaMode")? else { return Ok(None) };
    let id = req_s(item, "id")?;
    let context = |e: &dyn std::fmt::Display| corrupt(format!("key {id}: {e}"));
    let terms =
        QuotaTerms::from_stored(get_n(item, "quotaCalls")?, mode, get_s(item, "quotaAlerts")?.unwrap_or(""))
            .map_err(|e| context(&e))?;
    Ok(Some(Arc::new(KeyQuota {
        customer: Email::parse(req_s(item, "userEmail")?).map_err(|e| context(&e))?,
        plan: get_s(item, "plan")?.map(PlanName::parse).transpose().map_err(|e| context(&e))?,
        terms,
    })))
}

/// A customer's month in one buffer: the quota it counts against, the calls to add, the buffer's keys.
type CustomerMonth = (Arc<KeyQuota>, u64, Vec<KeyId>);

impl DynamoStore {
    /// Counts `days` (a buffer's fresh usage of existing keys, with what each key's look-up said of
    /// its quota) against their customers' month totals; records in `report` what that claims.
    pub(super) async fn settle_quotas(
        &self,
        days: &[(DayDelta, Option<Arc<KeyQuota>>)],
        at: DateTime<Utc>,
        report: &mut ApplyReport,
    ) {
        // Per customer and month: the terms (a customer holding keys of several quotas is held to the
        // smallest), the calls to add, and the buffer's keys.
        let mut totals: BTreeMap<(Email, Month), CustomerMonth> = BTreeMap::new();
        for (day, quota) in days {
            let Some(quota) = quota.as_ref().filter(|_| day.tally.successful_calls > 0) else { continue };
            let entry = totals
                .entry((quota.customer.clone(), day.day.month()))
                .or_insert_with(|| (Arc::clone(quota), 0, Vec::new()));
            if quota.terms.calls < entry.0.terms.calls {
                entry.0 = Arc::clone(quota);
            }
            entry.1 += day.tally.successful_calls;
            if !entry.2.contains(&day.key_id) {
                entry.2.push(day.key_id.clone());
            }
        }
        for ((customer, month), (quota, calls, keys)) in totals {
            if let Err(err) = self.settle_customer(&customer, month, &quota, calls, &keys, at, report).await {
                // Counted in the key's days all the same: the month's total lags until the next
                // buffer of the customer, and the invoice is never affected.
                tracing::warn!(%customer, %month, error = %meter_model::error_chain(&err), "quota ledger not moved");
                report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one customer's month: each argument is a part of it
    async fn settle_customer(
        &self,
        customer: &Email,
        month: Month,
        quota: &KeyQuota,
        calls: u64,
        buffer_keys: &[KeyId],
        at: DateTime<Utc>,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let table = &self.tables.usage_counters;
        let key = ledger_key(customer, month);
        let expires =
            (month.succ().first_day().start() + chrono::Duration::days(LEDGER_TTL_DAYS)).timestamp();
        // Sent once: an `ADD` resent after a timeout could add twice, so only a write DynamoDB refused
        // unapplied is resent.
        let added = UNPROCESSED_RETRY
            .run(
                || {
                    self.single_shot
                        .update_item()
                        .table_name(table)
                        .set_key(Some(key.clone()))
                        .update_expression("ADD used :n SET #ttl = :ttl")
                        .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                        .expression_attribute_values(":n", n(calls))
                        .expression_attribute_values(":ttl", n(expires.unsigned_abs()))
                        .return_values(ReturnValue::AllNew)
                        .send()
                        .map_err(|e| WriteFailure::of("count usage against a quota", table, e))
                },
                WriteFailure::worth_resending,
                |_, _| {},
            )
            .await
            .map_err(|failure| failure.err)?;
        report.quota_writes += 1;
        let ledger = added.attributes().cloned().unwrap_or_default();
        let after = get_n(&ledger, "used")?;
        let terms = &quota.terms;
        let crossed = terms.crossings(after.saturating_sub(calls), after);
        let mut keys_of_customer = None;
        for threshold in crossed.thresholds {
            if !self.claim_threshold(&key, threshold).await? {
                continue;
            }
            report.quota_writes += 1;
            if keys_of_customer.is_none() {
                keys_of_customer = Some(self.quota_keys_of(customer).await?);
            }
            report.alerts.push(UsageAlert {
                customer: customer.clone(),
                keys: keys_of_customer.iter().flatten().map(|(id, _)| id.clone()).collect(),
                plan: quota.plan.clone(),
                used: after,
                quota: terms.calls,
                mode: terms.mode,
                period: month,
                threshold,
                as_of: at,
            });
        }
        if !terms.refuses_at(after) {
            return Ok(());
        }
        // Past a hard quota: every key of the customer not yet marked for the month is marked. The
        // whole customer is looked for once, at the crossing; later buffers mark only their own keys
        // not in the ledger's `refusedKeys` (a key created since).
        let refused: HashSet<&str> = ledger
            .get("refusedKeys")
            .and_then(|v| v.as_ss().ok())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let candidates: Vec<(KeyId, Option<Month>)> = if refused.is_empty() {
            match keys_of_customer {
                Some(keys) => keys,
                None => self.quota_keys_of(customer).await?,
            }
        } else {
            buffer_keys.iter().filter(|k| !refused.contains(k.as_str())).map(|k| (k.clone(), None)).collect()
        };
        let mut marked = Vec::new();
        for (id, mark) in &candidates {
            if mark.is_some_and(|m| m >= month) {
                continue;
            }
            if self.mark_refused(id, month).await? {
                marked.push(id.clone());
            }
        }
        if marked.is_empty() {
            return Ok(());
        }
        self.single_shot
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression("ADD refusedKeys :ids")
            .expression_attribute_values(
                ":ids",
                AttributeValue::Ss(marked.iter().map(|k| k.as_str().to_owned()).collect()),
            )
            .send()
            .await
            .map_err(|e| store_error("record refused keys", e))?;
        self.client
            .update_item()
            .table_name(table)
            .set_key(Some(Self::epoch_key()))
            .update_expression("ADD epoch :one")
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| table_missing(store_error("bump revocation epoch", e), table))?;
        report.quota_writes += 2 + marked.len();
        report.quota_refusals.push(QuotaRefusalMark {
            customer: customer.clone(),
            period: month,
            used: after,
            quota: terms.calls,
            keys: marked,
        });
        Ok(())
    }

    /// Claims `threshold` on the ledger item `key`: true if this call added it to `sent`.
    async fn claim_threshold(
        &self,
        key: &HashMap<String, AttributeValue>,
        threshold: u16,
    ) -> Result<bool, StoreError> {
        let claimed = self
            .client
            .update_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(key.clone()))
            .update_expression("ADD sent :t")
            .condition_expression("attribute_not_exists(sent) OR NOT contains(sent, :n)")
            .expression_attribute_values(":t", AttributeValue::Ns(vec![threshold.to_string()]))
            .expression_attribute_values(":n", n(u64::from(threshold)))
            .send()
            .await;
        match claimed.map_err(|e| store_error("claim a usage alert", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Marks key `id` refused for `month`, unless it is marked for that month or a later one already
    /// (or no longer exists): true if this call marked it.
    async fn mark_refused(&self, id: &KeyId, month: Month) -> Result<bool, StoreError> {
        let marked = self
            .client
            .update_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(id)))
            .update_expression("SET quotaRefusedIn = :m")
            .condition_expression(
                "attribute_exists(id) AND quotaMode = :hard AND \
                 (attribute_not_exists(quotaRefusedIn) OR quotaRefusedIn < :m)",
            )
            .expression_attribute_values(":m", s(&month.to_string()))
            .expression_attribute_values(":hard", s("hard"))
            .send()
            .await;
        match marked.map_err(|e| store_error("mark a key refused for its quota", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The customer's keys that carry a quota, with the month each is marked refused in, in id
    /// order. A Scan of `ApiKeys` (no index by customer): made once per customer and month, at a
    /// crossing.
    async fn quota_keys_of(&self, customer: &Email) -> Result<Vec<(KeyId, Option<Month>)>, StoreError> {
        let filter = (
            "userEmail = :c AND attribute_exists(quotaMode)",
            HashMap::from([(":c".to_owned(), s(customer.as_str()))]),
        );
        let items =
            self.key_items_where(Some("id, quotaRefusedIn"), Some(filter), "list a customer's keys").await?;
        let mut keys = items
            .iter()
            .map(|item| {
                let id = KeyId::parse(req_s(item, "id")?).map_err(|e| corrupt(e.to_string()))?;
                let mark = get_s(item, "quotaRefusedIn")?
                    .map(str::parse::<Month>)
                    .transpose()
                    .map_err(|e| corrupt(format!("key {id}: {e}")))?;
                Ok((id, mark))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        keys.sort();
        Ok(keys)
    }
}

fn ledger_key(customer: &Email, month: Month) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("keyId".to_owned(), s(&format!("{QUOTA_PARTITION_PREFIX}{customer}"))),
        ("day".to_owned(), s(&month.to_string())),
    ])
}

impl meter_model::QuotaLedger for DynamoStore {
    async fn quota_used(&self, customer: &Email, month: Month) -> Result<u64, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(ledger_key(customer, month)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                table_missing(store_error("read a quota's month", e), &self.tables.usage_counters)
            })?;
        got.item().map_or(Ok(0), |item| get_n(item, "used"))
    }

    async fn set_quota_refusal(
        &self,
        customer: &Email,
        month: Month,
        refused: bool,
    ) -> Result<usize, StoreError> {
        let mut changed = Vec::new();
        for (id, mark) in self.quota_keys_of(customer).await? {
            if refused && mark.is_none_or(|m| m < month) {
                if self.mark_refused(&id, month).await? {
                    changed.push(id);
                }
            } else if !refused && mark == Some(month) && self.clear_refusal(&id, month).await? {
                changed.push(id);
            }
        }
        // The ledger's set of marked keys follows, so that a later crossing looks for them all again.
        let ids = AttributeValue::Ss(changed.iter().map(|k| k.as_str().to_owned()).collect());
        if !changed.is_empty() {
            self.client
                .update_item()
                .table_name(&self.tables.usage_counters)
                .set_key(Some(ledger_key(customer, month)))
                .update_expression(if refused { "ADD refusedKeys :ids" } else { "DELETE refusedKeys :ids" })
                .expression_attribute_values(":ids", ids)
                .send()
                .await
                .map_err(|e| store_error("record refused keys", e))?;
            self.client
                .update_item()
                .table_name(&self.tables.usage_counters)
                .set_key(Some(Self::epoch_key()))
                .update_expression("ADD epoch :one")
                .expression_attribute_values(":one", n(1))
                .send()
                .await
                .map_err(|e| {
                    table_missing(store_error("bump revocation epoch", e), &self.tables.usage_counters)
                })?;
        }
        Ok(changed.len())
    }
}

impl DynamoStore {
    /// Clears key `id`'s refusal if it still names `month`: true if this call cleared it.
    async fn clear_refusal(&self, id: &KeyId, month: Month) -> Result<bool, StoreError> {
        let cleared = self
            .client
            .update_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(id)))
            .update_expression("REMOVE quotaRefusedIn")
            .condition_expression("attribute_exists(id) AND quotaRefusedIn = :m")
            .expression_attribute_values(":m", s(&month.to_string()))
            .send()
            .await;
        match cleared.map_err(|e| store_error("clear a key's quota refusal", e)) {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }
}
