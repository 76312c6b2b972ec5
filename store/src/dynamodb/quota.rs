//! Plan quotas on DynamoDB (ARCHITECTURE.md, "Plan quotas and usage alerts"): after a buffer's
//! deliveries are marked and counted, the fresh billable calls of keys that carry a quota move their
//! customer's ledger item (`#quota#<customer>` / `<YYYY-MM>` in `UsageCounters`) with one `ADD` each;
//! each threshold is claimed by a conditional `ADD` to its `sent` set, and past a hard quota the
//! customer's keys are marked and the revocation epoch moves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use futures::TryFutureExt;
use meter_model::alerts::QuotaRefusalMark;
use meter_model::ledger::{CustomerMonth, CustomerQuota, customer_months};
use meter_model::quota::QuotaTerms;
use meter_model::{ApplyReport, DayDelta, Email, KeyId, Month, PlanName, StoreError};

use super::error::{WriteFailure, applied, store_error, table_missing};
use super::item::{Item, corrupt, get_n, get_s, n, req_s, s};
use super::{DynamoStore, TTL_ATTRIBUTE, UNPROCESSED_RETRY};

/// Partition prefix of the ledger items; `#` cannot start a key id.
const QUOTA_PARTITION_PREFIX: &str = "#quota#";

/// Ledger items outlive their month by a year (the over-run report reads them), then expire.
const LEDGER_TTL_DAYS: i64 = 400;

/// The attributes the key look-up projects (the look-up the transformer makes anyway): the id and,
/// where the key carries a quota, what counting it needs.
pub(super) const KEY_LOOKUP_PROJECTION: &str = "id, userEmail, #plan, quotaCalls, quotaMode, quotaAlerts";

/// The quota a looked-up key item carries, if any.
pub(super) fn key_quota(item: &Item) -> Result<Option<Arc<CustomerQuota>>, StoreError> {
    let Some(mode) = get_s(item, "quotaMode")? else { return Ok(None) };
    let id = req_s(item, "id")?;
    let context = |e: &dyn std::fmt::Display| corrupt(format!("key {id}: {e}"));
    let terms =
        QuotaTerms::from_stored(get_n(item, "quotaCalls")?, mode, get_s(item, "quotaAlerts")?.unwrap_or(""))
            .map_err(|e| context(&e))?;
    Ok(Some(Arc::new(CustomerQuota {
        customer: Email::parse(req_s(item, "userEmail")?).map_err(|e| context(&e))?,
        plan: get_s(item, "plan")?.map(PlanName::parse).transpose().map_err(|e| context(&e))?,
        terms,
    })))
}

impl DynamoStore {
    /// Counts `days` (a buffer's fresh usage of existing keys, with what each key's look-up said of
    /// its quota) against their customers' month totals; records in `report` what that claims.
    pub(super) async fn settle_quotas(
        &self,
        days: &[(DayDelta, Option<Arc<CustomerQuota>>)],
        at: DateTime<Utc>,
        report: &mut ApplyReport,
    ) {
        let with_quota = days.iter().filter_map(|(day, quota)| quota.as_ref().map(|quota| (day, quota)));
        for ((customer, month), counted) in customer_months(with_quota) {
            if let Err(err) = self.settle_customer(&customer, month, &counted, at, report).await {
                // Counted in the key's days all the same: the month's total lags until the next
                // buffer of the customer, and the invoice is never affected.
                tracing::warn!(%customer, %month, error = %meter_model::error_chain(&err), "quota ledger not moved");
                report.failure.get_or_insert_with(|| meter_model::error_chain(&err));
            }
        }
    }

    async fn settle_customer(
        &self,
        customer: &Email,
        month: Month,
        counted: &CustomerMonth,
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
                        .expression_attribute_values(":n", n(counted.calls))
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
        let terms = &counted.quota.terms;
        let crossed = terms.crossings(after.saturating_sub(counted.calls), after);
        let mut keys_of_customer = None;
        for threshold in crossed.thresholds {
            if !self.claim_threshold(&key, threshold).await? {
                continue;
            }
            report.quota_writes += 1;
            if keys_of_customer.is_none() {
                keys_of_customer = Some(self.quota_keys_of(customer).await?);
            }
            let keys = keys_of_customer.iter().flatten().map(|(id, _)| id.clone()).collect();
            report.alerts.push(counted.quota.alert(keys, after, month, threshold, at));
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
            counted.keys.iter().filter(|k| !refused.contains(k.as_str())).map(|k| (k.clone(), None)).collect()
        };
        let marked = self.set_refusals(customer, month, candidates, true).await?;
        if marked.is_empty() {
            return Ok(());
        }
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

    /// Marks (`refused`) or clears `month`'s refusal on each of `keys` (with the month each is marked
    /// in, where known) that needs it, records the change in the ledger's `refusedKeys` (so that a
    /// later crossing looks for every key again), and moves the revocation epoch when any changed.
    /// Answers the keys changed.
    async fn set_refusals(
        &self,
        customer: &Email,
        month: Month,
        keys: Vec<(KeyId, Option<Month>)>,
        refused: bool,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut changed = Vec::new();
        for (id, mark) in keys {
            let done = if refused {
                mark.is_none_or(|m| m < month) && self.mark_refused(&id, month).await?
            } else {
                mark == Some(month) && self.clear_refusal(&id, month).await?
            };
            if done {
                changed.push(id);
            }
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        self.single_shot
            .update_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(ledger_key(customer, month)))
            .update_expression(if refused { "ADD refusedKeys :ids" } else { "DELETE refusedKeys :ids" })
            .expression_attribute_values(
                ":ids",
                AttributeValue::Ss(changed.iter().map(|k| k.as_str().to_owned()).collect()),
            )
            .send()
            .await
            .map_err(|e| store_error("record refused keys", e))?;
        self.bump_revocation_epoch().await?;
        Ok(changed)
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
        applied(claimed.map_err(|e| store_error("claim a usage alert", e)))
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
        applied(marked.map_err(|e| store_error("mark a key refused for its quota", e)))
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
        let keys = self.quota_keys_of(customer).await?;
        let changed = self.set_refusals(customer, month, keys, refused).await?;
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
        applied(cleared.map_err(|e| store_error("clear a key's quota refusal", e)))
    }
}
