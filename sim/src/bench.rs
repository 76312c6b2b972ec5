//! The realtime benchmark's deliveries: 8,000 log events per payload, ~10% of them other log lines,
//! the three usage-line shapes mixed, a skewed key mix over 500 keys, written compact in CloudWatch's
//! field order.

/// Log events per payload.
pub const EVENTS_PER_PAYLOAD: usize = 8_000;
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

/// One gzipped CloudWatch Logs payload of [`EVENTS_PER_PAYLOAD`] log events; the same seed gives the
/// same bytes.
#[must_use]
pub fn payload(seed: u64) -> Vec<u8> {
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
    crate::cloudwatch::gzip(payload.as_bytes())
}
