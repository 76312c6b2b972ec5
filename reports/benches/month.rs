//! A month's invoices at scale: 100,000 customers with one key each and 30 days of rollups (3 million
//! key-day rows), priced and encoded into every file of the report.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meter_model::{ApiKeyRecord, Day, Email, HashedKey, KeyId, Month, NewKey, PlanName, Tally};
use meter_reports::files::encode_report;
use meter_reports::{KeyDayUsage, Pricing, invoices_for_month};

const CUSTOMERS: u64 = 100_000;

fn inputs() -> (Vec<ApiKeyRecord>, Vec<KeyDayUsage>) {
    let keys: Vec<ApiKeyRecord> = (0..CUSTOMERS)
        .map(|n| {
            ApiKeyRecord::new(NewKey {
                id: KeyId::parse(&format!("k{n:011}")).unwrap(),
                hashed_key: HashedKey::of(&format!("k{n}")),
                user_email: Email::parse(&format!("customer{n}@example.com")).unwrap(),
                plan: (n % 5 == 0).then(|| PlanName::parse("pro").unwrap()),
                name: None,
                created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            })
        })
        .collect();
    let month: Month = "2026-11".parse().unwrap();
    let days: Vec<Day> = month.days().collect();
    let usage = keys
        .iter()
        .enumerate()
        .flat_map(|(n, key)| {
            let id = key.id.to_string();
            days.iter().map(move |day| {
                let calls = (n as u64 * 7919) % 50_000;
                KeyDayUsage {
                    key_id: id.clone(),
                    day: *day,
                    tally: Tally {
                        successful_calls: calls,
                        failed_calls: calls / 50,
                        usage_count: calls + calls / 20,
                    },
                }
            })
        })
        .collect();
    (keys, usage)
}

fn month(c: &mut Criterion) {
    let pricing = Pricing::parse(include_str!("../pricing.example.toml")).unwrap();
    let (keys, usage) = inputs();
    let period: Month = "2026-11".parse().unwrap();
    let mut group = c.benchmark_group("report");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(CUSTOMERS));
    group.bench_function("invoices for 100k customers x 30 days", |b| {
        b.iter(|| black_box(invoices_for_month(period, &usage, &keys, &pricing).unwrap()));
    });
    let invoices = invoices_for_month(period, &usage, &keys, &pricing).unwrap();
    group.bench_function("encode the report files", |b| {
        b.iter(|| black_box(encode_report(&invoices, &pricing).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, month);
criterion_main!(benches);
