//! Throughput of the realtime path on realistic deliveries: 8,000 log events per payload, ~10% of
//! them other log lines, the three usage-line shapes mixed, a skewed key mix over 500 keys.
//!
//! `gunzip` alone is the floor; `decode_parse_aggregate` is all the CPU work the processor does per
//! delivery before it talks to the store. Run: `cargo bench -p meter-realtime --bench pipeline`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meter_realtime::{decode, lines};

const EVENTS_PER_PAYLOAD: usize = 8_000;
const KEYS: u64 = 500;

/// SplitMix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let base_ms: i64 = 1_796_047_400_000;
    let mut events = Vec::with_capacity(EVENTS_PER_PAYLOAD);
    for i in 0..EVENTS_PER_PAYLOAD {
        let ts = base_ms + i64::try_from(i).unwrap_or(0) * 7;
        let message = if rng.below(10) == 0 {
            format!(
                "REPORT RequestId: {:032x}\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\n",
                rng.next()
            )
        } else {
            // Skewed popularity: the square of a uniform draw favours low key numbers.
            let k = rng.below(KEYS * KEYS).isqrt();
            let key = format!("k{:011}", KEYS - 1 - k);
            let status = [200, 200, 200, 200, 201, 204, 400, 404, 500, 302]
                [usize::try_from(rng.below(10)).unwrap_or(0)];
            let line = serde_json::json!({
                "type": "API_USAGE", "requestId": format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", rng.next() >> 32, rng.below(65536), rng.below(4096), rng.below(4096), rng.below(1 << 48)),
                "keyId": key, "timestamp": meter_model::time::format_instant(chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default()),
                "statusCode": status, "shouldCount": rng.below(8) != 0, "method": "GET", "resource": "/v1/items/{id}", "latencyMs": rng.below(900),
            })
            .to_string();
            match rng.below(3) {
                0 => line,
                1 => format!("2026-11-30T14:03:07.125Z\t{:032x}\tINFO\t{line}\n", rng.next()),
                _ => format!(
                    r#"{{"timestamp":"2026-11-30T14:03:07.125Z","level":"INFO","requestId":"{:032x}","message":{line}}}"#,
                    rng.next()
                ),
            }
        };
        // Written as CloudWatch Logs writes it: compact, fields in its order.
        let id = u128::from(seed) * 1_000_000 + i as u128;
        events.push(format!(
            r#"{{"id":"{id:056}","timestamp":{ts},"message":{}}}"#,
            serde_json::json!(message)
        ));
    }
    let payload = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/items-api","logStream":"2026/11/30/[$LATEST]{seed:032x}","subscriptionFilters":["meter-usage"],"logEvents":[{}]}}"#,
        events.join(",")
    );
    decode::gzip(payload.as_bytes())
}

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
