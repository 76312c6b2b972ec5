//! What the demo's traffic would cost on AWS: the operations the pipeline counted, priced with the
//! public on-demand prices in [`PRICES`]. Decimal throughout.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use meter_model::Day;
use rust_decimal::Decimal;

/// When [`PRICES`] were taken from the public price pages (us-east-1, on-demand). Prices change:
/// check them before relying on the estimate.
pub(crate) const PRICE_LIST_DATE: &str = "2025-06 (us-east-1, on-demand, public AWS price pages)";

/// One price of the table.
pub(crate) struct Price {
    pub(crate) what: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) usd: &'static str,
}

/// The price table, in USD.
pub(crate) const PRICES: [Price; 10] = [
    Price { what: "CloudWatch Logs ingestion (standard)", unit: "GB", usd: "0.50" },
    Price { what: "Lambda requests", unit: "1M requests", usd: "0.20" },
    Price { what: "Lambda compute (x86)", unit: "GB-second", usd: "0.0000166667" },
    Price { what: "DynamoDB on-demand writes", unit: "1M write request units", usd: "0.625" },
    Price { what: "DynamoDB on-demand reads", unit: "1M read request units", usd: "0.125" },
    Price { what: "Firehose ingestion (5 KB increments)", unit: "GB", usd: "0.029" },
    Price { what: "Firehose format conversion to Parquet", unit: "GB", usd: "0.018" },
    Price { what: "Firehose dynamic partitioning", unit: "GB", usd: "0.020" },
    Price { what: "Firehose dynamic partitioning objects", unit: "1,000 objects", usd: "0.005" },
    Price { what: "S3 PUT requests", unit: "1,000 requests", usd: "0.005" },
];

/// "$0.50 per GB": the price a line was computed with.
pub(crate) fn price_label(what: &str) -> String {
    PRICES.iter().find(|p| p.what == what).map_or_else(String::new, |p| format!("${} per {}", p.usd, p.unit))
}

fn price(what: &str) -> Decimal {
    PRICES.iter().find(|p| p.what == what).and_then(|p| p.usd.parse().ok()).unwrap_or_default()
}

/// Bytes each transformer invocation logs itself (Lambda's START/END/REPORT lines and its one EMF
/// metric line), also ingested by CloudWatch Logs.
pub(crate) const OWN_LOG_BYTES_PER_INVOCATION: u64 = 1_600;

/// Lambda gives a function one vCPU per 1,769 MB: a second of single-threaded CPU work costs about
/// 1.769 GB-seconds at any memory size.
const GB_SECONDS_PER_CPU_SECOND: &str = "1.769";

/// Waiting for DynamoDB in one transformer invocation: three rounds of concurrent requests (marker
/// sets, key look-ups, day items) of about 10 ms each, at the transformer's 256 MB.
const IO_SECONDS_PER_INVOCATION: &str = "0.03";
const TRANSFORMER_MEMORY_GB: &str = "0.25";

/// Operations the pipeline counted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Usage {
    /// Bytes CloudWatch Logs ingests: the backend's lines with CloudWatch's per-event overhead, and
    /// the pipeline's own Lambda logs.
    pub(crate) log_bytes: u64,
    pub(crate) lambda_invocations: u64,
    /// Single-threaded CPU time of the Lambda work, as measured here, in milliseconds.
    pub(crate) lambda_ms: u64,
    /// Transformer invocations, each waiting on DynamoDB.
    pub(crate) lambda_io_invocations: u64,
    pub(crate) write_units: u64,
    pub(crate) read_units: u64,
    /// Firehose records in 5 KB increments: what ingestion, format conversion and dynamic partitioning
    /// are billed on.
    pub(crate) firehose_billed_bytes: u64,
    /// S3 objects Firehose delivers.
    pub(crate) firehose_objects: u64,
    pub(crate) s3_puts: u64,
}

/// One line of the estimate.
pub(crate) struct CostLine {
    pub(crate) what: &'static str,
    pub(crate) quantity: String,
    pub(crate) usd: Decimal,
}

const GB: u64 = 1 << 30;

fn per(amount: u64, unit: u64) -> Decimal {
    Decimal::from(amount) / Decimal::from(unit)
}

fn decimal(text: &str) -> Decimal {
    text.parse().unwrap_or_default()
}

/// The estimate, line by line: each line's quantity in its price's unit, times the price.
pub(crate) fn estimate(usage: &Usage) -> Vec<CostLine> {
    let cpu = Decimal::from(usage.lambda_ms) / Decimal::from(1000) * decimal(GB_SECONDS_PER_CPU_SECOND);
    let io = Decimal::from(usage.lambda_io_invocations)
        * decimal(IO_SECONDS_PER_INVOCATION)
        * decimal(TRANSFORMER_MEMORY_GB);
    let gb_seconds = cpu + io;
    let firehose = format!("{} MiB billed", usage.firehose_billed_bytes >> 20);
    let billed = per(usage.firehose_billed_bytes, GB);
    let lines: [(&'static str, String, Decimal); 10] = [
        (
            "CloudWatch Logs ingestion (standard)",
            format!("{} MiB", usage.log_bytes >> 20),
            per(usage.log_bytes, GB),
        ),
        (
            "Lambda requests",
            format!("{} invocations", usage.lambda_invocations),
            per(usage.lambda_invocations, 1_000_000),
        ),
        ("Lambda compute (x86)", format!("{} GB-s", gb_seconds.round_dp(2)), gb_seconds),
        (
            "DynamoDB on-demand writes",
            format!("{} WRU", usage.write_units),
            per(usage.write_units, 1_000_000),
        ),
        ("DynamoDB on-demand reads", format!("{} RRU", usage.read_units), per(usage.read_units, 1_000_000)),
        ("Firehose ingestion (5 KB increments)", firehose.clone(), billed),
        ("Firehose format conversion to Parquet", firehose.clone(), billed),
        ("Firehose dynamic partitioning", firehose, billed),
        (
            "Firehose dynamic partitioning objects",
            format!("{} objects", usage.firehose_objects),
            per(usage.firehose_objects, 1000),
        ),
        ("S3 PUT requests", format!("{} PUTs", usage.s3_puts), per(usage.s3_puts, 1000)),
    ];
    lines
        .into_iter()
        .map(|(what, quantity, units)| CostLine { what, quantity, usd: units * price(what) })
        .collect()
}

/// The realtime write path's designs compared on the same deliveries (ARCHITECTURE.md, "The realtime
/// write path"): what each would write to DynamoDB and how often Lambda would run, per million calls.
/// The adopted design's figures are what the pipeline did; the others follow from the same
/// deliveries by their write rules.
pub(crate) fn design_comparison(totals: &meter_realtime::RealtimeTotals, requests: u64) -> String {
    use std::fmt::Write as _;
    let apply = &totals.counters.apply;
    let deliveries = totals.deliveries;
    // Per delivery, one transaction (×2 units) of the marker, each key's totals and each key's day,
    // then a `lastUsed` update of each key and each day item; a consistent read of each key.
    let today_writes = 2 * (deliveries + totals.delivery_keys + totals.delivery_key_days)
        + totals.delivery_keys
        + totals.delivery_key_days;
    let today_reads = totals.delivery_keys;
    // Per delivery, a conditional marker, then one plain update per key and day with `lastUsed` folded
    // in; keys read once per function instance; lifetime totals kept by reconcile.
    let lean_writes = deliveries + totals.delivery_key_days;
    let lean_reads = totals.first_seen_keys;
    let designs = [
        ("today: direct, transactional", today_writes, today_reads, deliveries, "~5 s"),
        ("leaner direct", lean_writes, lean_reads, deliveries, "~5 s"),
        (
            "buffered through Firehose (adopted)",
            apply.write_units(),
            apply.read_units(),
            totals.invocations,
            "<= 60 s",
        ),
    ];
    let million = Decimal::from(requests.max(1)) / Decimal::from(1_000_000);
    let mut out = String::from(
        "  realtime write path, per million API calls on this traffic:\n    design                                   \
         WRU/M      RRU/M   invocations/M  visible  writes+reads+requests $/M\n",
    );
    for (name, writes, reads, invocations, visible) in designs {
        let usd = per(writes, 1_000_000) * price("DynamoDB on-demand writes")
            + per(reads, 1_000_000) * price("DynamoDB on-demand reads")
            + per(invocations, 1_000_000) * price("Lambda requests");
        let _ = writeln!(
            out,
            "    {name:<38} {:>9} {:>9} {:>15} {visible:>8}  ${}",
            (Decimal::from(writes) / million).round(),
            (Decimal::from(reads) / million).round(),
            (Decimal::from(invocations) / million).round(),
            (usd / million).round_dp(4)
        );
    }
    out
}

/// The S3 objects Firehose delivers: one per partition each time its destination buffer flushes
/// (every [`DESTINATION_BUFFER_SECONDS`] or [`DESTINATION_BUFFER_BYTES`], whichever first). Records
/// are counted in the partition of the UTC day they arrive on.
#[derive(Default)]
pub(crate) struct DeliveredObjects {
    /// (day partition, flush window) → bytes in it.
    windows: BTreeMap<(Day, i64), u64>,
}

/// Firehose's destination buffering as deployed: 900 s (its maximum) or 128 MiB.
const DESTINATION_BUFFER_SECONDS: i64 = 900;
const DESTINATION_BUFFER_BYTES: u64 = 128 << 20;

impl DeliveredObjects {
    pub(crate) fn record(&mut self, at: DateTime<Utc>, bytes: u64) {
        *self
            .windows
            .entry((Day::of(at), at.timestamp().div_euclid(DESTINATION_BUFFER_SECONDS)))
            .or_default() += bytes;
    }

    pub(crate) fn count(&self) -> u64 {
        self.windows.values().map(|bytes| bytes.div_ceil(DESTINATION_BUFFER_BYTES).max(1)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_price_parses_and_a_million_writes_cost_the_listed_price() {
        for p in &PRICES {
            assert!(p.usd.parse::<Decimal>().is_ok(), "{}", p.what);
        }
        let lines = estimate(&Usage { write_units: 1_000_000, ..Usage::default() });
        let writes = lines.iter().find(|l| l.what == "DynamoDB on-demand writes").unwrap();
        assert_eq!(writes.usd, "0.625".parse::<Decimal>().unwrap());
        let logs = estimate(&Usage { log_bytes: GB, ..Usage::default() });
        assert_eq!(logs[0].usd, "0.50".parse::<Decimal>().unwrap());
        // Ingestion, conversion and partitioning are all billed on the 5 KB-rounded records.
        let firehose = estimate(&Usage { firehose_billed_bytes: GB, ..Usage::default() });
        let total: Decimal = firehose.iter().map(|l| l.usd).sum();
        assert_eq!(total, "0.067".parse::<Decimal>().unwrap());
    }
}
