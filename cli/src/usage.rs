//! `meter usage show`: lifetime totals from the key item, or a month's from its day items.

use anyhow::Context;
use meter_model::time::format_instant;
use meter_model::{Clock, KeyId, KeyStore, Month, QuotaLedger, UsageReader, UsageTotals};
use serde::Serialize;

use crate::{JsonFlag, keys, to_json};

/// The `--json` shape of CONTRACTS.md §7.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageJson<'a> {
    key_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    month: Option<String>,
    successful_calls: u64,
    failed_calls: u64,
    usage_count: u64,
    last_used: Option<String>,
    /// The customer's month against the key's quota, for keys that carry one.
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<QuotaJson>,
}

/// A quota's month as `usage show` reports it: the customer's billable calls counted in realtime.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QuotaJson {
    calls: u64,
    mode: String,
    period: String,
    used: u64,
    remaining: u64,
    refused: bool,
}

pub(crate) async fn show<S: KeyStore + UsageReader + QuotaLedger>(
    store: &S,
    clock: &impl Clock,
    id: &KeyId,
    month: Option<Month>,
    flag: JsonFlag,
) -> anyhow::Result<String> {
    let record = keys::find(store, id).await?;
    // Live totals from the day items: the key item's own totals are refreshed only by the nightly
    // reconcile (CONTRACTS.md §2). A key's lifetime includes what it did before it was imported.
    let totals = match month {
        None => UsageTotals::of_days(
            &store.lifetime_usage(id).await.with_context(|| format!("cannot read {id}'s usage"))?,
        )
        .plus(record.imported),
        Some(month) => UsageTotals::of_days(
            &store
                .month_usage(id, month)
                .await
                .with_context(|| format!("cannot read {id}'s usage in {month}"))?,
        ),
    };
    // The quota's month: the one asked for, or the current one.
    let quota = match &record.quota {
        None => None,
        Some(terms) => {
            let period = month.unwrap_or_else(|| Month::of(clock.now()));
            let used = store
                .quota_used(&record.user_email, period)
                .await
                .with_context(|| format!("cannot read {}'s quota usage in {period}", record.user_email))?;
            Some(QuotaJson {
                calls: terms.calls,
                mode: terms.mode.to_string(),
                period: period.to_string(),
                used,
                remaining: terms.calls.saturating_sub(used),
                refused: record.quota_refused_in == Some(period),
            })
        }
    };
    let json = UsageJson {
        key_id: id.as_str(),
        month: month.map(|m| m.to_string()),
        successful_calls: totals.tally.successful_calls,
        failed_calls: totals.tally.failed_calls,
        usage_count: totals.tally.usage_count,
        last_used: totals.last_used.map(format_instant),
        quota,
    };
    if flag.json {
        return to_json(&json);
    }
    let period = month.map_or_else(|| "lifetime".to_owned(), |m| format!("{m} (UTC)"));
    let mut text = format!(
        "key {id}, {period}\n\
         billable calls   {}\n\
         failed calls     {}\n\
         all calls        {}\n\
         last used        {}\n",
        json.successful_calls,
        json.failed_calls,
        json.usage_count,
        json.last_used.as_deref().unwrap_or("never"),
    );
    if let Some(quota) = &json.quota {
        text.push_str(&format!(
            "quota            {} of {} billable calls used by {} in {} ({}), {} remaining{}\n",
            quota.used,
            quota.calls,
            record.user_email,
            quota.period,
            quota.mode,
            quota.remaining,
            if quota.refused { "; refused until the month ends" } else { "" }
        ));
    }
    Ok(text)
}
