//! Throughput of the realtime path on realistic deliveries: 8,000 log events per payload, ~10% of
//! them other log lines, the three usage-line shapes mixed, a skewed key mix over 500 keys.
//!
//! `gunzip` alone is the floor; `decode_parse_aggregate` is all the CPU work the processor does per
//! delivery before it talks to the store. Run: `cargo bench -p meter-realtime --bench pipeline`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meter_realtime::{decode, lines};
use meter_sim::bench::{EVENTS_PER_PAYLOAD, payload};

/// What applying these deliveries costs in DynamoDB, from the aggregates and the store's chunk plan:
/// every transactional item is 2 write units (items are far below 1 KB), each `lastUsed` advance 1,
/// and the existence check of the keys is a consistent `BatchGetItem` (1 read unit per key).
fn print_dynamodb_units(payloads: &[Vec<u8>]) {
    let (mut events, mut keys, mut key_days, mut chunks) = (0u64, 0u64, 0u64, 0u64);
    each_payload(payloads, |payload| {
        let aggregated = lines::aggregate(payload);
        events += aggregated.stats.usage_events;
        let k = aggregated.delta.by_key().count() as u64;
        let d = aggregated.delta.days().len() as u64;
        keys += k;
        key_days += d;
        chunks += (k + d).div_ceil(99);
        0
    });
    let per_million = |units: u64| units * 1_000_000 / events.max(1);
    let writes = 2 * (chunks + keys + key_days) + keys + key_days;
    println!(
        "dynamodb: {events} usage events in {} deliveries touch {keys} key totals and {key_days} day items in {chunks} \
         transactions: {} write units and {} read units per million events",
        payloads.len(),
        per_million(writes),
        per_million(keys),
    );
}

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
    print_dynamodb_units(&payloads);
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

criterion_group!(benches, pipeline);
criterion_main!(benches);
