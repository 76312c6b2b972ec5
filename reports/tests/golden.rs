//! Golden invoices: known usage and pricing give exactly these rows and amounts.
#![allow(clippy::unwrap_used)]

use chrono::{TimeZone, Utc};
use meter_model::{ApiKeyRecord, Email, HashedKey, KeyId, Month, NewKey, PlanName, Tally};
use meter_reports::{KeyDayUsage, Pricing, invoice_id, invoices_for_month};
use rust_decimal::Decimal;

/// The documented example in the repository: `payg` (1,000 included, 0.50 then 0.25 per 1,000 above
/// 1,000,000) and `pro` (49.00 with 100,000 included, then 0.005 per 1,000).
const PRICING: &str = include_str!("../pricing.example.toml");

fn key(id: &str, email: &str, plan: Option<&str>) -> ApiKeyRecord {
    ApiKeyRecord::new(NewKey {
        id: KeyId::parse(id).unwrap(),
        hashed_key: HashedKey::of(id),
        user_email: Email::parse(email).unwrap(),
        plan: plan.map(|p| PlanName::parse(p).unwrap()),
        name: None,
        created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    })
}

fn billable(key_id: &str, day: &str, calls: u64) -> KeyDayUsage {
    KeyDayUsage {
        key_id: key_id.into(),
        day: day.parse().unwrap(),
        tally: Tally { successful_calls: calls, failed_calls: 1, usage_count: calls + 1 },
    }
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[test]
fn customers_are_pooled_per_plan_and_priced_at_the_tier_edges() {
    let pricing = Pricing::parse(PRICING).unwrap();
    let month: Month = "2026-11".parse().unwrap();
    let keys = vec![
        key("aaaa00000001", "ann@example.com", None),
        key("aaaa00000002", "ann@example.com", None), // pooled with the first: one invoice
        key("bbbb00000001", "bob@example.com", Some("pro")),
        key("cccc00000001", "cat@example.com", None), // no usage: a zero invoice
        key("dddd00000001", "dan@example.com", None),
    ];
    let usage = vec![
        billable("aaaa00000001", "2026-11-01", 600_000),
        billable("aaaa00000002", "2026-11-30", 400_001), // ann: 1,000,001 billable = one past the bound
        billable("bbbb00000001", "2026-11-15", 101_000), // 1,000 above included at 0.005 → 0.005 → 0.01
        billable("dddd00000001", "2026-11-02", 1_000),   // exactly the included calls
        billable("dddd00000001", "2026-10-31", 5_000),   // another month: ignored
        billable("zzzz00000001", "2026-11-03", 7),       // no key item: unattributed
    ];
    let month_invoices = invoices_for_month(month, &usage, &keys, &pricing).unwrap();
    let rows: Vec<(String, String, u64, u64, Decimal)> = month_invoices
        .invoices
        .iter()
        .map(|i| {
            (
                i.customer_email.clone(),
                i.plan.clone(),
                i.tally.successful_calls,
                i.tally.failed_calls,
                i.amount,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("ann@example.com".into(), "payg".into(), 1_000_001, 2, d("499.50")),
            ("bob@example.com".into(), "pro".into(), 101_000, 1, d("49.01")),
            ("cat@example.com".into(), "payg".into(), 0, 0, d("0.00")),
            ("dan@example.com".into(), "payg".into(), 1_000, 1, d("0.00")),
        ]
    );
    let ann = &month_invoices.invoices[0];
    assert_eq!(ann.invoice_id, invoice_id(month, "ann@example.com", "payg"));
    let kinds: Vec<(&str, i64, Decimal)> =
        ann.lines.iter().map(|l| (l.kind.as_str(), l.calls, l.amount)).collect();
    assert_eq!(
        kinds,
        vec![
            ("monthly_fee", 0, d("0.00")),
            ("included", 1000, d("0.00")),
            ("tier_1", 999_000, d("499.50")),
            ("tier_2", 1, d("0.00")),
            ("key_usage", 600_000, d("0")),
            ("key_usage", 400_001, d("0")),
        ]
    );
    assert_eq!(month_invoices.unattributed.len(), 1);
    assert_eq!(month_invoices.total_amount(), d("548.51"));
    // Ids are unique per period, customer and plan.
    let mut ids: Vec<&str> = month_invoices.invoices.iter().map(|i| i.invoice_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert_ne!(
        invoice_id(month, "ann@example.com", "payg"),
        invoice_id(month.succ(), "ann@example.com", "payg")
    );
}

#[test]
fn a_key_on_a_plan_the_pricing_lacks_is_an_error_naming_the_key() {
    let pricing = Pricing::parse(PRICING).unwrap();
    let keys = vec![key("eeee00000001", "eve@example.com", Some("gold"))];
    let err = invoices_for_month("2026-11".parse().unwrap(), &[], &keys, &pricing).unwrap_err().to_string();
    assert!(err.contains("key eeee00000001") && err.contains("\"gold\""), "{err}");
}

/// The documented rule for a plan or customer change (`meter keys update`): a month is priced under
/// the terms in force at its end. A change on 15 November prices all of November under the new plan
/// and customer; October, priced again after the change (an adjustment, or a re-issue), keeps the
/// old ones: no credit on one plan and charge on another for an issued month.
#[test]
fn a_change_of_plan_and_customer_prices_each_month_under_the_terms_at_its_end() {
    let pricing = Pricing::parse(PRICING).unwrap();
    let mut changed = key("aaaa00000001", "team@example.com", Some("pro"));
    changed.previous_terms = vec![meter_model::KeyTerms {
        until: Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0).unwrap(),
        user_email: Email::parse("ann@example.com").unwrap(),
        plan: None,
    }];
    let usage = vec![
        billable("aaaa00000001", "2026-10-20", 5_000),
        billable("aaaa00000001", "2026-11-02", 3_000), // before the change, in the month it happened
        billable("aaaa00000001", "2026-11-20", 4_000),
    ];
    let invoices_of = |month: &str, key: &ApiKeyRecord| {
        invoices_for_month(month.parse().unwrap(), &usage, std::slice::from_ref(key), &pricing)
            .unwrap()
            .invoices
            .into_iter()
            .map(|i| (i.customer_email, i.plan, i.tally.successful_calls))
            .collect::<Vec<_>>()
    };
    assert_eq!(invoices_of("2026-10", &changed), [("ann@example.com".into(), "payg".into(), 5_000)]);
    assert_eq!(invoices_of("2026-11", &changed), [("team@example.com".into(), "pro".into(), 7_000)]);
    // A change at the very first instant of a month belongs to that month, not the one before.
    changed.previous_terms[0].until = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    assert_eq!(invoices_of("2026-11", &changed), [("ann@example.com".into(), "payg".into(), 7_000)]);
}

/// A soft quota serves beyond it and the plan's tiers price the overage; a hard quota's over-run (the
/// calls served before the refusal reached every authorizer) is priced like any served call. The quota
/// itself never changes an amount: the invoice prices what was served.
#[test]
fn a_quotas_overage_is_priced_by_the_plans_tiers() {
    let pricing = Pricing::parse(
        "currency = \"USD\"\ndefault_plan = \"starter\"\n\
         [plans.starter]\nmonthly_fee = \"5.00\"\nincluded_calls = 10000\n\
         tiers = [{ price_per_1000 = \"1.00\" }]\nquota = { calls = 10000, mode = \"soft\" }\nalerts = [80, 100]\n\
         [plans.free]\nmonthly_fee = \"0.00\"\nincluded_calls = 1000\n\
         tiers = [{ price_per_1000 = \"2.00\" }]\nquota = { calls = 1000, mode = \"hard\" }\n",
    )
    .unwrap();
    let month: Month = "2026-12".parse().unwrap();
    let keys = vec![
        key("aaaa00000001", "ann@example.com", None),
        key("bbbb00000001", "bob@example.com", Some("free")),
    ];
    let usage = vec![
        billable("aaaa00000001", "2026-12-07", 12_500), // 2,500 beyond the soft quota: 2.50
        billable("bbbb00000001", "2026-12-07", 1_013),  // 13 served before the refusal landed: 0.026 → 0.03
    ];
    let invoices = invoices_for_month(month, &usage, &keys, &pricing).unwrap();
    type Row<'a> = (&'a str, &'a str, Vec<(&'a str, i64, Decimal)>, Decimal);
    let rows: Vec<Row<'_>> = invoices
        .invoices
        .iter()
        .map(|i| {
            let lines = i
                .lines
                .iter()
                .filter(|l| l.kind != "key_usage")
                .map(|l| (l.kind.as_str(), l.calls, l.amount));
            (i.customer_email.as_str(), i.plan.as_str(), lines.collect(), i.amount)
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "ann@example.com",
                "starter",
                vec![
                    ("monthly_fee", 0, d("5.00")),
                    ("included", 10_000, d("0.00")),
                    ("tier_1", 2_500, d("2.50"))
                ],
                d("7.50"),
            ),
            (
                "bob@example.com",
                "free",
                vec![
                    ("monthly_fee", 0, d("0.00")),
                    ("included", 1_000, d("0.00")),
                    ("tier_1", 13, d("0.03"))
                ],
                d("0.03"),
            ),
        ]
    );
}
