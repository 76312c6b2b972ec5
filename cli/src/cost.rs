//! What the demo's traffic would cost on AWS: the operations the pipeline counted, priced with the
//! public on-demand prices in [`PRICES`]. Decimal throughout.

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
pub(crate) const PRICES: [Price; 9] = [
    Price { what: "CloudWatch Logs ingestion (standard)", unit: "GB", usd: "0.50" },
    Price { what: "Lambda requests", unit: "1M requests", usd: "0.20" },
    Price { what: "Lambda compute (x86)", unit: "GB-second", usd: "0.0000166667" },
    Price { what: "DynamoDB on-demand writes", unit: "1M write request units", usd: "0.625" },
    Price { what: "DynamoDB on-demand reads", unit: "1M read request units", usd: "0.125" },
    Price { what: "Firehose ingestion (5 KB increments)", unit: "GB", usd: "0.029" },
    Price { what: "Firehose format conversion to Parquet", unit: "GB", usd: "0.018" },
    Price { what: "Firehose dynamic partitioning", unit: "GB", usd: "0.020" },
    Price { what: "S3 PUT requests", unit: "1,000 requests", usd: "0.005" },
];

/// "$0.50 per GB": the price a line was computed with.
pub(crate) fn price_label(what: &str) -> String {
    PRICES.iter().find(|p| p.what == what).map_or_else(String::new, |p| format!("${} per {}", p.usd, p.unit))
}

fn price(what: &str) -> Decimal {
    PRICES.iter().find(|p| p.what == what).and_then(|p| p.usd.parse().ok()).unwrap_or_default()
}

/// Operations the pipeline counted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Usage {
    pub(crate) log_bytes: u64,
    pub(crate) lambda_invocations: u64,
    /// Lambda time in milliseconds (as measured here) and the memory size it would run with.
    pub(crate) lambda_ms: u64,
    pub(crate) lambda_memory_mb: u64,
    pub(crate) write_units: u64,
    pub(crate) read_units: u64,
    /// Firehose records and their bytes billed in 5 KB increments.
    pub(crate) firehose_billed_bytes: u64,
    pub(crate) firehose_bytes: u64,
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

/// The estimate, line by line: each line's quantity in its price's unit, times the price.
pub(crate) fn estimate(usage: &Usage) -> Vec<CostLine> {
    let gb_seconds = Decimal::from(usage.lambda_ms) / Decimal::from(1000) * per(usage.lambda_memory_mb, 1024);
    let firehose = format!("{} MiB", usage.firehose_bytes >> 20);
    let lines: [(&'static str, String, Decimal); 9] = [
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
        (
            "Lambda compute (x86)",
            format!("{} GB-s at {} MB", gb_seconds.round_dp(2), usage.lambda_memory_mb),
            gb_seconds,
        ),
        (
            "DynamoDB on-demand writes",
            format!("{} WRU", usage.write_units),
            per(usage.write_units, 1_000_000),
        ),
        ("DynamoDB on-demand reads", format!("{} RRU", usage.read_units), per(usage.read_units, 1_000_000)),
        (
            "Firehose ingestion (5 KB increments)",
            format!("{} MiB billed", usage.firehose_billed_bytes >> 20),
            per(usage.firehose_billed_bytes, GB),
        ),
        ("Firehose format conversion to Parquet", firehose.clone(), per(usage.firehose_bytes, GB)),
        ("Firehose dynamic partitioning", firehose, per(usage.firehose_bytes, GB)),
        ("S3 PUT requests", format!("{} PUTs", usage.s3_puts), per(usage.s3_puts, 1000)),
    ];
    lines
        .into_iter()
        .map(|(what, quantity, units)| CostLine { what, quantity, usd: units * price(what) })
        .collect()
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
    }
}
