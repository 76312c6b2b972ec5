//! Plan quotas on the embedded store (ARCHITECTURE.md, "Plan quotas and usage alerts"): each buffer's
//! fresh billable calls of keys that carry a quota move their customer's month total, in the buffer's
//! own transaction, so a redelivered or retried buffer moves nothing twice; what the step crosses is
//! claimed there too (each threshold once, the refusal marks with an epoch move).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use meter_model::alerts::{QuotaRefusalMark, UsageAlert};
use meter_model::quota::QuotaTerms;
use meter_model::{ApplyReport, DayDelta, Email, KeyId, Month, PlanName, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::{corrupt, counter, sql_error, to_i64};

const REVOCATION_EPOCH: &str = "revocation_epoch";

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
    let mut billable: BTreeMap<(&KeyId, Month), u64> = BTreeMap::new();
    for day in days {
        if day.tally.successful_calls > 0 {
            *billable.entry((&day.key_id, day.day.month())).or_default() += day.tally.successful_calls;
        }
    }
    let mut terms_of = tx
        .prepare_cached(
            "SELECT user_email, quota_calls, quota_mode, COALESCE(quota_alerts, ''), plan FROM api_keys \
             WHERE id = ?1 AND quota_mode IS NOT NULL",
        )
        .map_err(op)?;
    // Per customer and month: the terms (a customer holding keys of several quotas is held to the
    // smallest) and the calls to add.
    let mut totals: BTreeMap<(String, Month), (QuotaTerms, Option<String>, u64)> = BTreeMap::new();
    for ((key, month), calls) in billable {
        let row: Option<(String, i64, String, String, Option<String>)> = terms_of
            .query_row([key.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()
            .map_err(op)?;
        let Some((customer, quota, mode, alerts, plan)) = row else { continue };
        let terms = QuotaTerms::from_stored(counter(quota, "quotaCalls")?, &mode, &alerts)
            .map_err(|e| corrupt(format!("key {key}: {e}")))?;
        let entry = totals.entry((customer, month)).or_insert_with(|| (terms.clone(), plan.clone(), 0));
        if terms.calls < entry.0.calls {
            (entry.0, entry.1) = (terms, plan);
        }
        entry.2 += calls;
    }
    let mut add = tx
        .prepare_cached(
            "INSERT INTO quota_usage (customer, month, used, sent) VALUES (?1, ?2, ?3, '') \
             ON CONFLICT (customer, month) DO UPDATE SET used = used + excluded.used RETURNING used, sent",
        )
        .map_err(op)?;
    for ((customer, month), (terms, plan, calls)) in totals {
        let (after, sent): (i64, String) = add
            .query_row(params![customer, month.to_string(), to_i64(calls, "quota usage")?], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(op)?;
        report.quota_writes += 1;
        let after = counter(after, "quota usage")?;
        let crossed = terms.crossings(after.saturating_sub(calls), after);
        // Past a hard quota, every key of the customer not yet marked for the month is marked: the
        // keys of the crossing, and any created since (a new key's first calls are its last).
        let over = terms.refuses_at(after);
        if crossed.thresholds.is_empty() && !over {
            continue;
        }
        let email =
            Email::parse(&customer).map_err(|e| corrupt(format!("quota usage of {customer:?}: {e}")))?;
        let keys = quota_keys(tx, &customer)?;
        let plan = plan.map(|p| PlanName::parse(&p)).transpose().map_err(|e| corrupt(e.to_string()))?;
        let mut claimed: BTreeSet<u16> = sent.split(',').filter_map(|t| t.parse().ok()).collect();
        let mut announced = false;
        for threshold in crossed.thresholds {
            // A threshold already claimed (a quota lowered and raised again) is not announced twice.
            if claimed.insert(threshold) {
                announced = true;
                report.alerts.push(UsageAlert {
                    customer: email.clone(),
                    keys: keys.clone(),
                    plan: plan.clone(),
                    used: after,
                    quota: terms.calls,
                    mode: terms.mode,
                    period: month,
                    threshold,
                    as_of: at,
                });
            }
        }
        if announced {
            let sent = claimed.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            tx.execute(
                "UPDATE quota_usage SET sent = ?3 WHERE customer = ?1 AND month = ?2",
                params![customer, month.to_string(), sent],
            )
            .map_err(op)?;
        }
        if over {
            // A late call of an earlier month never takes back a later month's mark.
            let marked = tx
                .execute(
                    "UPDATE api_keys SET quota_refused_in = ?2 WHERE user_email = ?1 AND quota_mode = 'hard' \
                     AND (quota_refused_in IS NULL OR quota_refused_in < ?2)",
                    params![customer, month.to_string()],
                )
                .map_err(op)?;
            if marked == 0 {
                continue;
            }
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
                [REVOCATION_EPOCH],
            )
            .map_err(op)?;
            report.quota_refusals.push(QuotaRefusalMark {
                customer: email,
                period: month,
                used: after,
                quota: terms.calls,
                keys,
            });
        }
    }
    Ok(())
}

/// The customer's keys that carry a quota, in id order.
fn quota_keys(tx: &Connection, customer: &str) -> Result<Vec<KeyId>, StoreError> {
    let op = |e| sql_error("read a customer's keys", e);
    let mut stmt = tx
        .prepare_cached(
            "SELECT id FROM api_keys WHERE user_email = ?1 AND quota_mode IS NOT NULL ORDER BY id",
        )
        .map_err(op)?;
    let ids: Vec<String> =
        stmt.query_map([customer], |r| r.get(0)).map_err(op)?.collect::<Result<_, _>>().map_err(op)?;
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
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
                [REVOCATION_EPOCH],
            )
            .map_err(op)?;
        }
        tx.commit().map_err(op)?;
        Ok(changed)
    }
}
