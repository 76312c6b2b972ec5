//! Pricing (CONTRACTS.md §6): a TOML file with a currency, a default plan, and per plan a monthly fee,
//! included calls and graduated tiers priced per 1,000 calls. Validated whole before anything is
//! priced; amounts are decimal from the file's text to the invoice, never floating point.
//!
//! ```toml
//! currency = "USD"
//! default_plan = "payg"
//! [plans.payg]
//! monthly_fee = "0.00"
//! included_calls = 1000
//! tiers = [ { up_to = 1_000_000, price_per_1000 = "0.50" }, { price_per_1000 = "0.25" } ]
//! [plans.free]
//! monthly_fee = "0.00"
//! tiers = [ { price_per_1000 = "0.00" } ]
//! quota = { calls = 10000, mode = "hard" }   # billable calls per UTC month; "soft" serves beyond it
//! alerts = [50, 80, 100]                     # percent of the quota, each announced once a month
//! ```

use std::collections::BTreeMap;

use meter_model::quota::{QuotaMode, QuotaTerms};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

/// The most decimal places a unit price may have; also the scale of unit prices in Parquet files.
pub const PRICE_SCALE: u32 = 10;

/// A pricing file that cannot be used; says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// Not TOML, or fields of the wrong type or unknown.
    #[error("pricing is not valid TOML for this format: {0}")]
    Syntax(String),
    /// A rule of the format is broken.
    #[error("pricing: {0}")]
    Invalid(String),
}

/// Amounts are written as strings ("0.50"): a TOML float would pass through binary floating point.
fn decimal_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let text = String::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("amounts are strings such as \"0.50\", never TOML floats"))?;
    text.trim().parse().map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal amount")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    currency: String,
    minor_units: Option<u32>,
    default_plan: String,
    plans: BTreeMap<String, PlanFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(deserialize_with = "decimal_text")]
    monthly_fee: Decimal,
    #[serde(default)]
    included_calls: u64,
    #[serde(default)]
    tiers: Vec<TierFile>,
    quota: Option<QuotaFile>,
    #[serde(default)]
    alerts: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaFile {
    calls: u64,
    mode: QuotaMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    up_to: Option<u64>,
    #[serde(deserialize_with = "decimal_text")]
    price_per_1000: Decimal,
}

/// A graduated tier: the calls above the previous bound (or the included calls) up to `up_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The bound, counted over all of the month's billable calls; `None` for the last tier.
    pub up_to: Option<u64>,
    /// Price per 1,000 calls.
    pub price_per_1000: Decimal,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Its name.
    pub name: String,
    /// Charged every month, usage or not.
    pub monthly_fee: Decimal,
    /// Billable calls that cost nothing.
    pub included_calls: u64,
    /// The tiers, bounds increasing, the last unbounded.
    pub tiers: Vec<Tier>,
    /// The monthly quota of billable calls and its alert thresholds, if the plan has one.
    pub quota: Option<QuotaTerms>,
}

/// A validated pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// ISO 4217 code.
    pub currency: String,
    /// Decimal places of the currency's minor unit (2 for USD, 0 for JPY).
    pub minor_units: u32,
    /// The plan of keys that name none.
    pub default_plan: String,
    /// The plans by name.
    pub plans: BTreeMap<String, Plan>,
}

/// One priced line of a plan's month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// What the line is: `monthly_fee`, `included`, `tier_1`, `tier_2`, …
    pub kind: String,
    /// In words, for the invoice.
    pub description: String,
    /// Calls the line covers (0 for the fee).
    pub calls: u64,
    /// Price per 1,000 calls (0 for the fee and the included calls).
    pub unit_price_per_1000: Decimal,
    /// The line's amount, rounded half-up to the minor unit.
    pub amount: Decimal,
}

impl Pricing {
    /// Parses and validates a pricing file.
    pub fn parse(text: &str) -> Result<Self, PricingError> {
        let file: PricingFile = toml::from_str(text).map_err(|e| PricingError::Syntax(e.to_string()))?;
        let invalid = |m: String| Err(PricingError::Invalid(m));
        let Some(currency) = iso_currency::Currency::from_code(&file.currency) else {
            return invalid(format!("currency {:?} is not an ISO 4217 code such as \"USD\"", file.currency));
        };
        // ISO 4217's minor unit (2 for USD, 0 for JPY, 3 for KWD), unless the file says otherwise.
        let Some(minor_units) = file.minor_units.or_else(|| currency.exponent().map(u32::from)) else {
            return invalid(format!(
                "currency {} has no minor unit in ISO 4217; say how amounts are rounded with minor_units = N",
                file.currency
            ));
        };
        if minor_units > 4 {
            return invalid(format!("minor_units = {minor_units}: at most 4 decimal places"));
        }
        if file.plans.is_empty() {
            return invalid("no plans: add at least one [plans.NAME] table".into());
        }
        if !file.plans.contains_key(&file.default_plan) {
            return invalid(format!("default_plan {:?} is not one of the plans", file.default_plan));
        }
        let mut plans = BTreeMap::new();
        for (name, plan) in file.plans {
            let where_ = format!("plan {name:?}");
            if plan.monthly_fee.is_sign_negative() {
                return invalid(format!("{where_}: monthly_fee {} is negative", plan.monthly_fee));
            }
            if plan.monthly_fee.scale() > minor_units {
                return invalid(format!(
                    "{where_}: monthly_fee {} has more decimals than {} allows ({minor_units})",
                    plan.monthly_fee, file.currency
                ));
            }
            if plan.tiers.is_empty() {
                return invalid(format!(
                    "{where_}: no tiers; add at least one, e.g. tiers = [ {{ price_per_1000 = \"0.00\" }} ]"
                ));
            }
            let mut previous = plan.included_calls;
            let last = plan.tiers.len() - 1;
            for (index, tier) in plan.tiers.iter().enumerate() {
                let tier_name = format!("{where_} tier {}", index + 1);
                if tier.price_per_1000.scale() > PRICE_SCALE {
                    return invalid(format!(
                        "{tier_name}: price_per_1000 {} has more than {} decimal places",
                        tier.price_per_1000, PRICE_SCALE
                    ));
                }
                if tier.price_per_1000.is_sign_negative() {
                    return invalid(format!(
                        "{tier_name}: price_per_1000 {} is negative",
                        tier.price_per_1000
                    ));
                }
                match (tier.up_to, index == last) {
                    (Some(_), true) => {
                        return invalid(format!(
                            "{tier_name}: the last tier must have no up_to (it prices every call above the previous bound)"
                        ));
                    }
                    (None, false) => {
                        return invalid(format!("{tier_name}: only the last tier may omit up_to"));
                    }
                    (Some(bound), false) if bound <= previous => {
                        return invalid(format!(
                            "{tier_name}: up_to = {bound} must be above {previous} (the included calls and the \
                             previous bound); tiers must be ordered and must not overlap"
                        ));
                    }
                    (Some(bound), false) => previous = bound,
                    (None, true) => {}
                }
            }
            let quota = match (plan.quota, plan.alerts) {
                (None, alerts) if alerts.is_empty() => None,
                (None, _) => {
                    return invalid(format!(
                        "{where_}: alerts are percentages of a quota; add quota = {{ calls = N, mode = \"hard\" }}"
                    ));
                }
                (Some(quota), alerts) => match QuotaTerms::new(quota.calls, quota.mode, alerts) {
                    Ok(terms) => Some(terms),
                    Err(err) => return invalid(format!("{where_}: {err}")),
                },
            };
            let tiers = plan
                .tiers
                .into_iter()
                .map(|t| Tier { up_to: t.up_to, price_per_1000: t.price_per_1000 })
                .collect();
            plans.insert(
                name.clone(),
                Plan {
                    name,
                    monthly_fee: plan.monthly_fee,
                    included_calls: plan.included_calls,
                    tiers,
                    quota,
                },
            );
        }
        Ok(Self { currency: file.currency, minor_units, default_plan: file.default_plan, plans })
    }

    /// The names of the plans, sorted.
    #[must_use]
    pub fn plan_names(&self) -> Vec<&str> {
        self.plans.keys().map(String::as_str).collect()
    }

    /// The plan called `name`, or the default plan for `None`.
    pub fn plan(&self, name: Option<&str>) -> Result<&Plan, PricingError> {
        let name = name.unwrap_or(&self.default_plan);
        self.plans.get(name).ok_or_else(|| {
            PricingError::Invalid(format!(
                "plan {name:?} is not in the pricing (plans: {})",
                self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// `amount` written with exactly the currency's minor unit (`0.00`, not `0`).
    #[must_use]
    pub fn in_minor_units(&self, amount: Decimal) -> Decimal {
        let mut value = self.round(amount);
        value.rescale(self.minor_units);
        value
    }

    /// Rounds an amount half-up (away from zero at the midpoint) to the currency's minor unit.
    #[must_use]
    pub fn round(&self, amount: Decimal) -> Decimal {
        amount.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointAwayFromZero)
    }

    /// The priced lines of `billable` calls in a month on `plan`: the fee, the included calls, then
    /// each tier (tiers with no calls are listed too, with a zero amount, so invoices show the scale).
    #[must_use]
    pub fn price(&self, plan: &Plan, billable: u64) -> Vec<PricedLine> {
        let mut lines = vec![PricedLine {
            kind: "monthly_fee".into(),
            description: format!("{} monthly fee", plan.name),
            calls: 0,
            unit_price_per_1000: Decimal::ZERO,
            amount: self.round(plan.monthly_fee),
        }];
        let included = billable.min(plan.included_calls);
        lines.push(PricedLine {
            kind: "included".into(),
            description: format!("included calls (first {})", plan.included_calls),
            calls: included,
            unit_price_per_1000: Decimal::ZERO,
            amount: self.round(Decimal::ZERO),
        });
        let mut lower = plan.included_calls;
        for (index, tier) in plan.tiers.iter().enumerate() {
            let upper = tier.up_to.unwrap_or(u64::MAX);
            let calls = billable.clamp(lower, upper.max(lower)) - lower;
            let amount = Decimal::from(calls) * tier.price_per_1000 / Decimal::ONE_THOUSAND;
            let range = match tier.up_to {
                Some(bound) => format!("calls {} to {bound}", lower + 1),
                None => format!("calls above {lower}"),
            };
            lines.push(PricedLine {
                kind: format!("tier_{}", index + 1),
                description: format!("{range} at {} per 1,000", tier.price_per_1000),
                calls,
                unit_price_per_1000: tier.price_per_1000,
                amount: self.round(amount),
            });
            lower = upper.max(lower);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example in the repository.
    const EXAMPLE: &str = include_str!("../pricing.example.toml");

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn amounts(pricing: &Pricing, plan: &str, calls: u64) -> Vec<(String, u64, Decimal)> {
        let plan = pricing.plan(Some(plan)).unwrap();
        pricing.price(plan, calls).into_iter().map(|l| (l.kind, l.calls, l.amount)).collect()
    }

    fn total(pricing: &Pricing, plan: &str, calls: u64) -> Decimal {
        amounts(pricing, plan, calls).into_iter().map(|(_, _, a)| a).sum()
    }

    #[test]
    fn tier_edges_price_exactly() {
        let p = Pricing::parse(EXAMPLE).unwrap();
        assert_eq!(total(&p, "payg", 0), d("0.00"));
        assert_eq!(total(&p, "payg", 1000), d("0.00"), "exactly the included calls");
        // One call past the included ones: 0.0005, rounded half-up to 0.00.
        assert_eq!(total(&p, "payg", 1001), d("0.00"));
        assert_eq!(total(&p, "payg", 1010), d("0.01"), "10 calls = 0.005 → 0.01 half-up");
        assert_eq!(total(&p, "payg", 1_000_000), d("499.50"), "exactly the first bound: 999,000 calls");
        assert_eq!(
            amounts(&p, "payg", 1_000_001),
            vec![
                ("monthly_fee".into(), 0, d("0.00")),
                ("included".into(), 1000, d("0.00")),
                ("tier_1".into(), 999_000, d("499.50")),
                ("tier_2".into(), 1, d("0.00")),
            ]
        );
        assert_eq!(total(&p, "payg", 1_000_004), d("499.50"));
        assert_eq!(total(&p, "payg", 1_000_002), d("499.50"), "0.0005 rounds to 0.00");
        assert_eq!(total(&p, "payg", 1_000_020), d("499.51"), "0.005 rounds up");
    }

    #[test]
    fn a_billion_calls_and_half_cents_stay_exact() {
        let p = Pricing::parse(EXAMPLE).unwrap();
        assert_eq!(total(&p, "payg", 1_000_000_000), d("499.50") + d("249750.00"));
        // 0.005 per 1,000: 1,000 calls above the included = 0.005 → 0.01 (half-up), never 0.00 from a float.
        assert_eq!(total(&p, "pro", 101_000), d("49.01"));
        assert_eq!(total(&p, "pro", 1_000_100_000), d("49.00") + d("5000.00"));
    }

    #[test]
    fn invalid_pricing_says_what_is_wrong() {
        let base = |plans: &str| format!("currency = \"USD\"\ndefault_plan = \"a\"\n{plans}");
        for (text, says) in [
            (base("[plans.a]\nmonthly_fee = \"-1\"\ntiers = [{price_per_1000 = \"1\"}]"), "negative"),
            (base("[plans.a]\nmonthly_fee = \"1\"\ntiers = [{price_per_1000 = \"-1\"}]"), "negative"),
            (
                base("[plans.a]\nmonthly_fee = \"1\"\ntiers = [{up_to = 10, price_per_1000 = \"1\"}, {up_to = 5, price_per_1000 = \"1\"}, {price_per_1000 = \"1\"}]"),
                "ordered",
            ),
            (
                base("[plans.a]\nmonthly_fee = \"1\"\nincluded_calls = 100\ntiers = [{up_to = 100, price_per_1000 = \"1\"}, {price_per_1000 = \"1\"}]"),
                "must be above 100",
            ),
            (base("[plans.a]\nmonthly_fee = \"1\"\ntiers = [{up_to = 10, price_per_1000 = \"1\"}]"), "last tier"),
            (base("[plans.a]\nmonthly_fee = \"1\"\ntiers = [{price_per_1000 = \"1\"}, {price_per_1000 = \"1\"}]"), "only the last"),
            (base("[plans.a]\nmonthly_fee = \"1\"\ntiers = []"), "no tiers"),
            (base("[plans.a]\nmonthly_fee = \"1.001\"\ntiers = [{price_per_1000 = \"1\"}]"), "more decimals"),
            (base("[plans.b]\nmonthly_fee = \"1\"\ntiers = [{price_per_1000 = \"1\"}]"), "default_plan"),
            (base("[plans.a]\nmonthly_fee = 1.5\ntiers = [{price_per_1000 = \"1\"}]"), "never TOML floats"),
            (base("[plans.a]\nmonthly_fee = \"1\"\nfee = 2\ntiers = [{price_per_1000 = \"1\"}]"), "unknown field"),
            ("currency = \"usd\"\ndefault_plan = \"a\"\n[plans.a]\nmonthly_fee = \"1\"\ntiers = [{price_per_1000 = \"1\"}]".into(), "ISO 4217"),
        ] {
            let err = Pricing::parse(&text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}\n→ {err}");
        }
        let p = Pricing::parse(EXAMPLE).unwrap();
        assert!(
            p.plan(Some("gold")).unwrap_err().to_string().contains("plan \"gold\" is not in the pricing")
        );
    }

    #[test]
    fn a_plan_may_carry_a_monthly_quota_and_alert_thresholds() {
        let text = "currency = \"USD\"\ndefault_plan = \"free\"\n[plans.free]\nmonthly_fee = \"0.00\"\n\
                    tiers = [{price_per_1000 = \"0\"}]\nquota = { calls = 10000, mode = \"hard\" }\nalerts = [100, 50, 80]\n\
                    [plans.payg]\nmonthly_fee = \"0.00\"\ntiers = [{price_per_1000 = \"1\"}]";
        let p = Pricing::parse(text).unwrap();
        let free = p.plan(None).unwrap().quota.clone().unwrap();
        assert_eq!((free.calls, free.mode, free.alerts), (10_000, QuotaMode::Hard, vec![50, 80, 100]));
        assert_eq!(p.plan(Some("payg")).unwrap().quota, None);
        let base = |plan: &str| {
            format!(
                "currency = \"USD\"\ndefault_plan = \"a\"\n[plans.a]\nmonthly_fee = \"1\"\ntiers = [{{price_per_1000 = \"1\"}}]\n{plan}"
            )
        };
        for (plan, says) in [
            ("alerts = [50]", "alerts are percentages of a quota"),
            ("quota = { calls = 0, mode = \"hard\" }", "plan \"a\": a quota of 0 calls"),
            ("quota = { calls = 10, mode = \"firm\" }", "neither \"hard\" nor \"soft\""),
            ("quota = { calls = 10 }", "missing field `mode`"),
            ("quota = { calls = 10, mode = \"soft\" }\nalerts = [0]", "between 1 and 1000"),
            ("quota = { calls = 10, mode = \"soft\" }\nalerts = [50, 50]", "listed twice"),
        ] {
            let err = Pricing::parse(&base(plan)).unwrap_err().to_string();
            assert!(err.contains(says), "{plan}\n→ {err}");
        }
    }

    #[test]
    fn currencies_round_to_their_minor_unit() {
        let jpy = Pricing::parse(
            &EXAMPLE.replace("USD", "JPY").replace("\"0.00\"", "\"0\"").replace("\"49.00\"", "\"49\""),
        )
        .unwrap();
        assert_eq!(jpy.minor_units, 0);
        // Not a currency at all: refused, whatever its shape.
        let zzz = "currency = \"ABC\"\ndefault_plan = \"a\"\n[plans.a]\nmonthly_fee = \"1\"\ntiers = [{price_per_1000 = \"1\"}]";
        assert!(matches!(Pricing::parse(zzz), Err(PricingError::Invalid(m)) if m.contains("ISO 4217")));
        assert_eq!(jpy.round(d("2.5")), d("3"));
        let usd = Pricing::parse(EXAMPLE).unwrap();
        // Totals are written with the currency's decimals, zero too.
        assert_eq!(usd.in_minor_units(Decimal::ZERO).to_string(), "0.00");
        assert_eq!(usd.in_minor_units(d("12.5")).to_string(), "12.50");
        assert_eq!(jpy.in_minor_units(Decimal::ZERO).to_string(), "0");
        assert_eq!(usd.round(d("0.005")), d("0.01"));
        assert_eq!(usd.round(d("0.0049999")), d("0.00"));
    }

    proptest::proptest! {
        /// The tier lines always cover exactly the billable calls above the included ones.
        #[test]
        fn tiers_cover_every_call_once(calls in 0u64..5_000_000_000) {
            let p = Pricing::parse(EXAMPLE).unwrap();
            let lines = amounts(&p, "payg", calls);
            let covered: u64 = lines.iter().filter(|(k, _, _)| k != "monthly_fee").map(|(_, c, _)| c).sum();
            proptest::prop_assert_eq!(covered, calls);
        }
    }
}
