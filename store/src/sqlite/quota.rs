//! Plan quotas on the embedded store (ARCHITECTURE.md, "Plan quotas and usage alerts"): each buffer's
//! fresh billable calls of keys that carry a quota move their customer's month total, in the buffer's
//! own transaction, so a redelivered or retried buffer moves nothing twice; what the step crosses is
//! claimed there too (each threshold once, the refusal marks with an epoch move).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use meter_model::alerts::QuotaRefusalMark;
use meter_model::ledger::{CustomerQuota, customer_months};
use meter_model::quota::QuotaTerms;
use meter_model::{ApplyReport, DayDelta, Email, KeyId, Month, PlanName, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::{corrupt, counter, sql_error, to_i64};
use super::keys::bump_revocation_epoch;

/// Whether any key carries a quota: one cheap read per buffer, so that stores without quotas pay
/// nothing more.
pub(super) fn any_quota(tx: &Connection) -> Result<bool, StoreError> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys WHERE quota_mode IS NOT NULL)")
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
        .map_err(|e| sql_error("read quotas", e))
}

/// Adds the billable calls of `days` (a buffer's fresh usage of existing keys) to their customers'
/// month totals and claims what the totals cross, recording it in `report`.
pub(super) fn settle<'a>(
    tx: &Connection,
    days: impl IntoIterator<Item = &'a DayDelta>,
    at: DateTime<Utc>,
    report: &mut ApplyReport,
) -> Result<(), StoreError> {
    let op = |e| sql_error("count usage against quotas", e);
    let mut terms_of = tx
        .prepare_cached(
            "SELECT user_email, quota_calls, quota_mode, COALESCE(quota_alerts, ''), plan FROM api_keys \
             WHERE id = ?1 AND quota_mode IS NOT NULL",
        )
        .map_err(op)?;
    // Each key's quota, read once per buffer (its days of several months share it).
    let mut quotas: HashMap<&KeyId, Option<Arc<CustomerQuota>>> = HashMap::new();
    let mut with_quota = Vec::new();
    for day in days {
        if day.tally.successful_calls == 0 {
            continue;
        }
        let quota = match quotas.get(&day.key_id) {
            Some(known) => known.clone(),
            None => {
                let row: Option<(String, i64, String, String, Option<String>)> = terms_of
                    .query_row([day.key_id.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()
                    .map_err(op)?;
                let quota = row.map(|row| customer_quota(&day.key_id, row)).transpose()?.map(Arc::new);
                quotas.insert(&day.key_id, quota.clone());
                quota
            }
        };
        if let Some(quota) = quota {
            with_quota.push((day, quota));
        }
    }
    let mut add = tx
        .prepare_cached(
            "INSERT INTO quota_usage (customer, month, used, sent) VALUES (?1, ?2, ?3, '') \
             ON CONFLICT (customer, month) DO UPDATE SET used = used + excluded.used RETURNING used, sent",
        )
        .map_err(op)?;
    for ((customer, month), counted) in customer_months(with_quota.iter().map(|(day, quota)| (*day, quota))) {
        let (after, sent): (i64, String) = add
            .query_row(
                params![customer.as_str(), month.to_string(), to_i64(counted.calls, "quota usage")?],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(op)?;
        report.quota_writes += 1;
        let after = counter(after, "quota usage")?;
        let terms = &counted.quota.terms;
        let crossed = terms.crossings(after.saturating_sub(counted.calls), after);
        // Past a hard quota, every key of the customer not yet marked for the month is marked: the
        // keys of the crossing, and any created since (a new key's first calls are its last).
        let over = terms.refuses_at(after);
        if crossed.thresholds.is_empty() && !over {
            continue;
        }
        let keys = quota_keys(tx, &customer)?;
        let mut claimed: BTreeSet<u16> = sent.split(',').filter_map(|t| t.parse().ok()).collect();
        let mut announced = false;
        for threshold in crossed.thresholds {
            // A threshold already claimed (a quota lowered and raised again) is not announced twice.
            if claimed.insert(threshold) {
                announced = true;
                report.alerts.push(counted.quota.alert(keys.clone(), after, month, threshold, at));
            }
        }
        if announced {
            let sent = claimed.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            tx.execute(
                "UPDATE quota_usage SET sent = ?3 WHERE customer = ?1 AND month = ?2",
                params![customer.as_str(), month.to_string(), sent],
            )
            .map_err(op)?;
        }
        if over && set_refusal(tx, &customer, month, true)? > 0 {
            report.quota_refusals.push(QuotaRefusalMark {
                customer,
                period: month,
                used: after,
                quota: terms.calls,
                keys,
            });
        }
    }
    Ok(())
}

/// A key's quota from its row: customer, calls, mode, thresholds, plan.
fn customer_quota(
    key: &KeyId,
    (customer, calls, mode, alerts, plan): (String, i64, String, String, Option<String>),
) -> Result<CustomerQuota, StoreError> {
    let context = |e: &dyn std::fmt::Display| corrupt(format!("key {key}: {e}"));
    Ok(CustomerQuota {
        customer: Email::parse(&customer).map_err(|e| context(&e))?,
        plan: plan.as_deref().map(PlanName::parse).transpose().map_err(|e| context(&e))?,
        terms: QuotaTerms::from_stored(counter(calls, "quotaCalls")?, &mode, &alerts)
            .map_err(|e| context(&e))?,
    })
}

/// Marks (`refused`) or clears `month`'s refusal on the customer's keys with a hard quota (a late call
/// of an earlier month never takes back a later month's mark; clearing takes only that month's), and
/// moves the revocation epoch when any changed. Answers how many changed.
fn set_refusal(tx: &Connection, customer: &Email, month: Month, refused: bool) -> Result<usize, StoreError> {
    let op = |e| sql_error("set a quota refusal", e);
    let changed = if refused {
        tx.execute(
            "UPDATE api_keys SET quota_refused_in = ?2 WHERE user_email = ?1 AND quota_mode = 'hard' \
             AND (quota_refused_in IS NULL OR quota_refused_in < ?2)",
            params![customer.as_str(), month.to_string()],
        )
    } else {
        tx.execute(
            "UPDATE api_keys SET quota_refused_in = NULL WHERE user_email = ?1 AND quota_refused_in = ?2",
            params![customer.as_str(), month.to_string()],
        )
    }
    .map_err(op)?;
    if changed > 0 {
        bump_revocation_epoch(tx).map_err(op)?;
    }
    Ok(changed)
}

/// The customer's keys that carry a quota, in id order.
fn quota_keys(tx: &Connection, customer: &Email) -> Result<Vec<KeyId>, StoreError> {
    let op = |e| sql_error("read a customer's keys", e);
    let mut stmt = tx
        .prepare_cached(
            "SELECT id FROM api_keys WHERE user_email = ?1 AND quota_mode IS NOT NULL ORDER BY id",
        )
        .map_err(op)?;
    let ids: Vec<String> = stmt
        .query_map([customer.as_str()], |r| r.get(0))
        .map_err(op)?
        .collect::<Result<_, _>>()
        .map_err(op)?;
    ids.iter().map(|id| KeyId::parse(id).map_err(|e| corrupt(e.to_string()))).collect()
}

impl meter_model::QuotaLedger for super::SqliteStore {
    async fn quota_used(&self, customer: &Email, month: Month) -> Result<u64, StoreError> {
        let used: Option<i64> = self
            .conn()
            .query_row(
                "SELECT used FROM quota_usage WHERE customer = ?1 AND month = ?2",
                params![customer.as_str(), month.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql_error("read a quota's month", e))?;
        counter(used.unwrap_or(0), "quota usage")
    }

    async fn set_quota_refusal(
        &self,
        customer: &Email,
        month: Month,
        refused: bool,
    ) -> Result<usize, StoreError> {
        let op = |e| sql_error("set a quota refusal", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(op)?;
        let changed = set_refusal(&tx, customer, month, refused)?;
        tx.commit().map_err(op)?;
        Ok(changed)
    }
}
