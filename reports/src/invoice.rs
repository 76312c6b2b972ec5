//! A month's invoices from authoritative usage (CONTRACTS.md §6): usage pooled per customer
//! (`userEmail`) and plan, priced by the plan's tiers, with per-key detail lines.

use std::collections::{BTreeMap, HashMap};

use meter_model::{ApiKeyRecord, Day, KeyId, Month, Tally};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::pricing::{Pricing, PricingError};

/// A key's usage on a day, as the rollup gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDayUsage {
    /// The key id as the archive holds it.
    pub key_id: String,
    /// The UTC day.
    pub day: Day,
    /// Distinct calls by the counting rules.
    pub tally: Tally,
}

/// One invoice: a customer on a plan for a month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// Deterministic and unique per period, customer and plan.
    pub invoice_id: String,
    /// `YYYY-MM`.
    pub period: Month,
    /// The customer.
    pub customer_email: String,
    /// The plan.
    pub plan: String,
    /// The customer's keys on that plan.
    pub keys: Vec<KeyId>,
    /// The month's usage, pooled over those keys.
    pub tally: Tally,
    /// Fee plus lines, each line rounded to the minor unit.
    pub amount: Decimal,
    /// The currency.
    pub currency: String,
    /// The priced lines, then one detail line per key.
    pub lines: Vec<InvoiceLine>,
}

/// A line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// The invoice.
    pub invoice_id: String,
    /// 1-based position.
    pub line_no: u32,
    /// `monthly_fee`, `included`, `tier_N`, or `key_usage` (detail, not priced).
    pub kind: String,
    /// In words.
    pub description: String,
    /// The key, for `key_usage` lines.
    pub key_id: Option<String>,
    /// Billable calls the line covers (negative for an adjustment that takes calls back).
    pub calls: i64,
    /// Price per 1,000 calls.
    pub unit_price_per_1000: Decimal,
    /// The amount (zero for detail lines).
    pub amount: Decimal,
}

/// A correction to an invoice already issued for an earlier month: its authoritative usage changed
/// since (late events), so the difference is billed, or credited, on the next invoice (CONTRACTS.md ).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Adjustment {
    /// The month whose invoice is corrected.
    pub period: Month,
    /// That month's invoice.
    pub invoice_id: String,
    /// The customer.
    pub customer_email: String,
    /// The plan.
    pub plan: String,
    /// Billable calls now minus billable calls invoiced so far.
    pub successful_calls_delta: i64,
    /// Amount now minus amount invoiced so far (with earlier adjustments), in the currency.
    #[serde(with = "decimal_text")]
    pub amount_delta: Decimal,
}

/// Decimals as strings in JSON, exactly.
pub(crate) mod decimal_text {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal amount")))
    }
}

/// Usage of key ids that have no key item: listed, never billed (CONTRACTS.md ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unattributed {
    /// The key id as the archive holds it.
    pub key_id: String,
    /// The month's usage.
    pub tally: Tally,
}

/// A month's invoices, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthInvoices {
    /// The month.
    pub period: Month,
    /// Sorted by customer, then plan.
    pub invoices: Vec<Invoice>,
    /// Usage no key item claims.
    pub unattributed: Vec<Unattributed>,
    /// The key ids of the daily usage, with their customer and plan (none for key ids without a key).
    pub daily_keys: Vec<DailyKey>,
    /// Daily usage per key, in the rollup's order (by day, then key id).
    pub daily: Vec<DailyUsage>,
}

/// A key id of the daily usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyKey {
    /// The key id as the archive holds it.
    pub key_id: String,
    /// The customer, for a key with an item.
    pub customer_email: Option<String>,
    /// The plan, for a key with an item.
    pub plan: Option<String>,
}

/// A key's usage on a day: an index into [`MonthInvoices::daily_keys`] rather than copies of its
/// strings, so that millions of rows cost no allocation each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyUsage {
    /// Index into [`MonthInvoices::daily_keys`].
    pub key: usize,
    /// The UTC day.
    pub day: Day,
    /// The counts.
    pub tally: Tally,
}

impl MonthInvoices {
    /// Puts each adjustment on this month's invoice of the same customer and plan (an invoice holding
    /// only adjustments is made when there is none), as an `adjustment` line added to its amount.
    pub fn add_adjustments(&mut self, adjustments: &[Adjustment], currency: &str) {
        for adjustment in adjustments {
            let position = self
                .invoices
                .iter()
                .position(|i| i.customer_email == adjustment.customer_email && i.plan == adjustment.plan);
            let index = position.unwrap_or_else(|| {
                let id = invoice_id(self.period, &adjustment.customer_email, &adjustment.plan);
                self.invoices.push(Invoice {
                    invoice_id: id,
                    period: self.period,
                    customer_email: adjustment.customer_email.clone(),
                    plan: adjustment.plan.clone(),
                    keys: Vec::new(),
                    tally: Tally::default(),
                    amount: Decimal::ZERO,
                    currency: currency.to_owned(),
                    lines: Vec::new(),
                });
                self.invoices.len() - 1
            });
            let invoice = &mut self.invoices[index];
            invoice.amount += adjustment.amount_delta;
            invoice.lines.push(InvoiceLine {
                invoice_id: invoice.invoice_id.clone(),
                line_no: u32::try_from(invoice.lines.len() + 1).unwrap_or(u32::MAX),
                kind: "adjustment".into(),
                description: format!(
                    "adjustment for {} ({}): {:+} billable calls since it was issued",
                    adjustment.period, adjustment.invoice_id, adjustment.successful_calls_delta
                ),
                key_id: None,
                calls: adjustment.successful_calls_delta,
                unit_price_per_1000: Decimal::ZERO,
                amount: adjustment.amount_delta,
            });
        }
        self.invoices.sort_by(|a, b| (&a.customer_email, &a.plan).cmp(&(&b.customer_email, &b.plan)));
    }

    /// Sum of the invoice amounts.
    #[must_use]
    pub fn total_amount(&self) -> Decimal {
        self.invoices.iter().map(|i| i.amount).sum()
    }

    /// Sum of the invoiced usage.
    #[must_use]
    pub fn total_tally(&self) -> Tally {
        self.invoices.iter().map(|i| i.tally).sum()
    }
}

/// The invoice id of a customer's plan in a period: `INV-YYYYMM-` and 12 hex digits of a SHA-256 of
/// the three, so the same invoice always gets the same id, wherever and whenever it is computed.
#[must_use]
pub fn invoice_id(period: Month, customer_email: &str, plan: &str) -> String {
    let digest = Sha256::digest(format!("{period}\n{customer_email}\n{plan}").as_bytes());
    let text = period.to_string().replace('-', "");
    format!("INV-{text}-{}", &hex::encode(digest)[..12])
}

/// The last instant of `month` (UTC): the terms in force then price it.
fn month_end(month: Month) -> chrono::DateTime<chrono::Utc> {
    month.succ().first_day().start() - chrono::Duration::nanoseconds(1)
}

/// Whether a key could be used during `month`: created before it ended and not revoked before it began.
fn live_during(key: &ApiKeyRecord, month: Month) -> bool {
    let (start, end) = (month.first_day().start(), month.succ().first_day().start());
    key.created_at < end && key.revoked_at.is_none_or(|at| at >= start)
}

/// Prices a month. Fails before anything is produced when a key names a plan the pricing lacks.
pub fn invoices_for_month(
    period: Month,
    usage: &[KeyDayUsage],
    keys: &[ApiKeyRecord],
    pricing: &Pricing,
) -> Result<MonthInvoices, PricingError> {
    // Every key that was live, or that has usage in the month, is on its customer's invoice.
    let by_id: HashMap<&str, &ApiKeyRecord> = keys.iter().map(|k| (k.id.as_str(), k)).collect();
    // A key's customer and plan for the month: those in force at its end (CONTRACTS.md §6), so a
    // change made after a month is over never reprices it (nor its later adjustments).
    let month_end = month_end(period);
    let mut daily_index: HashMap<&str, usize> = HashMap::new();
    let mut daily_keys: Vec<DailyKey> = Vec::new();
    let mut key_totals: Vec<Tally> = Vec::new();
    let mut daily = Vec::with_capacity(usage.len());
    for row in usage.iter().filter(|r| period.contains(r.day)) {
        let key = *daily_index.entry(row.key_id.as_str()).or_insert_with(|| {
            let record = by_id.get(row.key_id.as_str());
            let terms = record.map(|k| k.terms_at(month_end));
            daily_keys.push(DailyKey {
                key_id: row.key_id.clone(),
                customer_email: terms.map(|(email, _)| email.as_str().to_owned()),
                plan: terms
                    .map(|(_, plan)| plan.map_or(pricing.default_plan.as_str(), |p| p.as_str()).to_owned()),
            });
            key_totals.push(Tally::default());
            daily_keys.len() - 1
        });
        key_totals[key].add(row.tally);
        daily.push(DailyUsage { key, day: row.day, tally: row.tally });
    }
    let total_of = |id: &str| daily_index.get(id).map(|&k| key_totals[k]).unwrap_or_default();
    let unattributed: BTreeMap<&str, Tally> = daily_keys
        .iter()
        .zip(&key_totals)
        .filter(|(k, _)| k.customer_email.is_none())
        .map(|(k, t)| (k.key_id.as_str(), *t))
        .collect();
    let mut groups: BTreeMap<(String, String), Vec<(&ApiKeyRecord, Tally)>> = BTreeMap::new();
    // Every key on a plan the pricing lacks, so that one error lists them all.
    let mut unpriced: Vec<String> = Vec::new();
    for key in keys {
        let tally = total_of(key.id.as_str());
        if tally.is_zero() && !live_during(key, period) {
            continue;
        }
        let (email, key_plan) = key.terms_at(month_end);
        match pricing.plan(key_plan.map(|p| p.as_str())) {
            Ok(plan) => {
                groups.entry((email.as_str().to_owned(), plan.name.clone())).or_default().push((key, tally))
            }
            Err(_) => unpriced.push(format!(
                "key {} of {} on plan {:?}",
                key.id,
                email,
                key_plan.map_or(pricing.default_plan.as_str(), |p| p.as_str())
            )),
        }
    }
    if !unpriced.is_empty() {
        return Err(PricingError::Invalid(format!(
            "{} key(s) are on plans the pricing lacks, so no invoice of {period} is issued: {}; the \
             pricing's plans are {}",
            unpriced.len(),
            unpriced.join(", "),
            pricing.plan_names().join(", ")
        )));
    }
    let mut invoices = Vec::with_capacity(groups.len());
    for ((customer_email, plan_name), members) in groups {
        let plan = pricing.plan(Some(&plan_name))?;
        let tally: Tally = members.iter().map(|(_, t)| *t).sum();
        let id = invoice_id(period, &customer_email, &plan_name);
        let priced = pricing.price(plan, tally.successful_calls);
        let amount = priced.iter().map(|l| l.amount).sum();
        let mut lines: Vec<InvoiceLine> = priced
            .into_iter()
            .map(|l| InvoiceLine {
                invoice_id: id.clone(),
                line_no: 0,
                kind: l.kind,
                description: l.description,
                key_id: None,
                calls: i64::try_from(l.calls).unwrap_or(i64::MAX),
                unit_price_per_1000: l.unit_price_per_1000,
                amount: l.amount,
            })
            .collect();
        for (key, key_tally) in &members {
            lines.push(InvoiceLine {
                invoice_id: id.clone(),
                line_no: 0,
                kind: "key_usage".into(),
                description: format!(
                    "key {}{}: {} failed calls, {} calls in all",
                    key.id,
                    key.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                    key_tally.failed_calls,
                    key_tally.usage_count
                ),
                key_id: Some(key.id.to_string()),
                calls: i64::try_from(key_tally.successful_calls).unwrap_or(i64::MAX),
                unit_price_per_1000: Decimal::ZERO,
                amount: Decimal::ZERO,
            });
        }
        for (index, line) in lines.iter_mut().enumerate() {
            line.line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        }
        invoices.push(Invoice {
            invoice_id: id,
            period,
            customer_email,
            plan: plan_name,
            keys: members.iter().map(|(k, _)| k.id.clone()).collect(),
            tally,
            amount,
            currency: pricing.currency.clone(),
            lines,
        });
    }
    Ok(MonthInvoices {
        period,
        invoices,
        unattributed: unattributed
            .into_iter()
            .map(|(key_id, tally)| Unattributed { key_id: key_id.to_owned(), tally })
            .collect(),
        daily_keys,
        daily,
    })
}
