//! Throughput of the realtime path on realistic deliveries: 8,000 log events per payload, ~10% of
//! them other log lines, the three usage-line shapes mixed, a skewed key mix over 500 keys.
//!
//! `gunzip` alone is the floor; `decode_parse_aggregate` is all the CPU work the transformer does per
//! delivery for the counters before it talks to the store. `small_deliveries` does the same on what
//! CloudWatch really sends (each log stream every 2 s: the medium reference traffic, 11.5 events a
//! delivery), where the per-delivery overhead shows. What the deliveries cost in DynamoDB is printed
//! by `meter realtime --json` and `meter demo --traffic …`. Run: `cargo bench -p meter-realtime --bench
//! pipeline`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meter_realtime::{decode, lines};
use meter_sim::bench::{EVENTS_PER_PAYLOAD, payload};

/// Gunzips and parses each payload, then measures it with `f`.
fn each_payload(payloads: &[Vec<u8>], mut f: impl FnMut(&decode::LogsPayload<'_>) -> usize) -> usize {
    payloads
        .iter()
        .map(|p| {
            let inflated = decode::gunzip(p).unwrap_or_default();
            decode::parse_payload(&inflated).map(|payload| f(&payload)).unwrap_or(0)
        })
        .sum()
}

fn pipeline(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = (1..=4).map(payload).collect();
    let inflated: usize = payloads.iter().map(|p| decode::gunzip(p).map_or(0, |v| v.len())).sum();
    let compressed: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "payloads: {} log events, {inflated} bytes inflated ({} per event), {compressed} compressed",
        EVENTS_PER_PAYLOAD * payloads.len(),
        inflated / (EVENTS_PER_PAYLOAD * payloads.len())
    );
    let events = u64::try_from(EVENTS_PER_PAYLOAD * payloads.len()).unwrap_or(u64::MAX);
    let mut group = c.benchmark_group("realtime");
    group.throughput(Throughput::Elements(events));
    group.bench_with_input(BenchmarkId::new("gunzip", EVENTS_PER_PAYLOAD), &payloads, |b, payloads| {
        b.iter(|| payloads.iter().map(|p| decode::gunzip(p).map(|v| v.len()).unwrap_or(0)).sum::<usize>());
    });
    group.bench_with_input(
        BenchmarkId::new("decode_parse_aggregate", EVENTS_PER_PAYLOAD),
        &payloads,
        |b, payloads| {
            b.iter(|| each_payload(payloads, |payload| lines::aggregate(payload).delta.days().len()))
        },
    );
    // The payload stage alone: log events found, each message's end located, nothing read yet.
    group.bench_with_input(
        BenchmarkId::new("decode_payload_only", EVENTS_PER_PAYLOAD),
        &payloads,
        |b, payloads| b.iter(|| each_payload(payloads, |payload| payload.log_events.len())),
    );
    group.finish();
}

/// A minute of the medium reference traffic, as the records Firehose hands the transformer.
fn small_records() -> Vec<Vec<u8>> {
    use meter_sim::traffic::{Faults, Profile, SimConfig, Simulator};
    let profile = Profile::named("medium").unwrap_or(Profile::ALL[1]);
    let mut sim = Simulator::new(SimConfig::steady(
        profile,
        1,
        "2026-11".parse().unwrap_or_else(|_| unreachable!()),
        1,
        Faults::default(),
    ));
    let mut records = Vec::new();
    while let Some((_, deliveries)) = sim.next_slice() {
        for delivery in deliveries {
            records.push(delivery.record);
        }
    }
    records
}

fn small_deliveries(c: &mut Criterion) {
    let records = small_records();
    let events: u64 =
        records.iter().map(|r| each_payload(std::slice::from_ref(r), |p| p.log_events.len()) as u64).sum();
    println!("small deliveries: {} records, {events} log events", records.len());
    let mut group = c.benchmark_group("realtime");
    group.throughput(Throughput::Elements(events));
    group.bench_with_input(BenchmarkId::new("small_deliveries", records.len()), &records, |b, records| {
        b.iter(|| each_payload(records, |payload| lines::aggregate(payload).delta.days().len()))
    });
    group.finish();
}

criterion_group!(benches, pipeline, small_deliveries);
criterion_main!(benches);
