//! The report's files (CONTRACTS.md §6): `invoices.csv|parquet`, `invoice_lines.csv|parquet`,
//! `usage_daily.parquet` and `manifest.json`, which lists every other file with its SHA-256 and row
//! count, the totals, the pricing used, and when and from what the report was computed.
//!
//! Amounts are written as decimal text with exactly the currency's decimals in CSV and as Parquet
//! DECIMAL(38, s) (an exact scaled integer), never as floating point.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{Decimal128Builder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use meter_model::Month;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::invoice::{Adjustment, MonthInvoices, decimal_text};
use crate::pricing::{PRICE_SCALE, Pricing};

/// A report file could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {file}")]
pub struct EncodeError {
    file: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn encode_error(file: &'static str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> EncodeError {
    move |source| EncodeError { file, source }
}

/// A file of the report and its place in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name within the report's folder.
    pub name: String,
    /// Lowercase hex SHA-256 of its bytes.
    pub sha256: String,
    /// Data rows (the CSV header excluded).
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// One invoice as the manifest keeps it: what later adjustments compare against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInvoice {
    /// The invoice.
    pub invoice_id: String,
    /// The customer.
    pub customer_email: String,
    /// The plan.
    pub plan: String,
    /// Billable calls of the month itself (adjustments of earlier months excluded).
    pub successful_calls: u64,
    /// The month's own amount (adjustments of earlier months excluded).
    #[serde(with = "decimal_text")]
    pub amount_for_period: Decimal,
}

/// The report's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTotals {
    /// Invoices.
    pub invoices: u64,
    /// Billable calls invoiced.
    pub successful_calls: u64,
    /// Failed calls.
    pub failed_calls: u64,
    /// Usage events.
    pub usage_count: u64,
    /// Sum of the invoices' amounts, adjustments included.
    #[serde(with = "decimal_text")]
    pub amount: Decimal,
    /// Sum of the adjustments.
    #[serde(with = "decimal_text")]
    pub adjustments: Decimal,
    /// Usage events of key ids without a key item (listed, never billed).
    pub unattributed_usage_count: u64,
}

/// Where the numbers came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSource {
    /// The archive the rollup read.
    pub archive: String,
    /// Archive files read.
    pub files_read: u64,
    /// Rows read (duplicates included).
    pub rows_read: u64,
    /// Distinct requests counted.
    pub distinct_requests: u64,
}

/// The pricing a report used, whole, so that it can be re-priced and checked later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPricing {
    /// SHA-256 of the pricing file.
    pub sha256: String,
    /// The pricing file's text.
    pub toml: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The month.
    pub period: Month,
    /// `issued` or `draft`.
    pub status: String,
    /// When the report was computed.
    pub computed_at: DateTime<Utc>,
    /// The currency.
    pub currency: String,
    /// Where the numbers came from.
    pub source: ManifestSource,
    /// The pricing used.
    pub pricing: ManifestPricing,
    /// The totals.
    pub totals: ManifestTotals,
    /// Every other file of the report.
    pub files: Vec<ManifestFile>,
    /// Every invoice with its own month's figures.
    pub invoices: Vec<ManifestInvoice>,
    /// Adjustments of earlier months carried by this report's invoices.
    pub adjustments: Vec<Adjustment>,
}

/// An encoded file of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    /// Its name within the report's folder.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub content_type: &'static str,
    /// Its data rows.
    pub rows: u64,
}

impl ReportFile {
    /// Its manifest entry.
    #[must_use]
    pub fn manifest_entry(&self) -> ManifestFile {
        ManifestFile {
            name: self.name.clone(),
            sha256: sha256_hex(&self.bytes),
            rows: self.rows,
            bytes: self.bytes.len() as u64,
        }
    }
}

/// The encoded files, in the order the manifest lists them.
pub type ReportFiles = Vec<ReportFile>;

/// A text cell as spreadsheet tools read it safely (OWASP's CSV-injection guidance): a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a formula, so it is
/// prefixed with `'`, which spreadsheets show as text. Only text columns go through here: amounts and
/// counts are numbers, negative ones included. The Parquet files keep every value as it is.
fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() }
}

fn fixed(amount: Decimal, decimals: u32) -> String {
    let mut value = amount;
    value.rescale(decimals);
    value.to_string()
}

fn scaled(amount: Decimal, scale: u32) -> i128 {
    let mut value = amount;
    value.rescale(scale);
    value.mantissa()
}

fn decimal_field(name: &str, scale: u32) -> Field {
    // Scales are at most 10 (checked by the pricing), which fits an i8.
    Field::new(name, DataType::Decimal128(38, i8::try_from(scale).unwrap_or(10)), false)
}

fn decimal_column(values: impl Iterator<Item = Decimal>, scale: u32) -> Result<ArrayRef, EncodeError> {
    let mut builder = Decimal128Builder::new();
    for value in values {
        builder.append_value(scaled(value, scale));
    }
    let array = builder
        .finish()
        .with_precision_and_scale(38, i8::try_from(scale).unwrap_or(10))
        .map_err(|e| encode_error("a decimal column")(e.into()))?;
    Ok(Arc::new(array))
}

fn parquet(file: &'static str, fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Vec<u8>, EncodeError> {
    meter_archive::format::parquet_file(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| encode_error(file)(e.into()))
}

fn csv_file(file: &'static str, header: &[&str], rows: Vec<Vec<String>>) -> Result<Vec<u8>, EncodeError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).map_err(|e| encode_error(file)(e.into()))?;
    for row in rows {
        writer.write_record(row).map_err(|e| encode_error(file)(e.into()))?;
    }
    writer.into_inner().map_err(|e| encode_error(file)(e.into_error().into()))
}

const INVOICE_COLUMNS: [&str; 10] = [
    "invoice_id",
    "period",
    "customer_email",
    "plan",
    "successful_calls",
    "failed_calls",
    "usage_count",
    "keys",
    "amount",
    "currency",
];

const LINE_COLUMNS: [&str; 8] =
    ["invoice_id", "line_no", "kind", "description", "key_id", "calls", "unit_price_per_1000", "amount"];

/// Encodes every data file of a month's report.
pub fn encode_report(month: &MonthInvoices, pricing: &Pricing) -> Result<ReportFiles, EncodeError> {
    let decimals = pricing.minor_units;
    let invoices = &month.invoices;
    let lines: Vec<_> = invoices.iter().flat_map(|i| &i.lines).collect();

    let invoice_rows = invoices
        .iter()
        .map(|i| {
            vec![
                i.invoice_id.clone(),
                i.period.to_string(),
                spreadsheet_safe(&i.customer_email),
                spreadsheet_safe(&i.plan),
                i.tally.successful_calls.to_string(),
                i.tally.failed_calls.to_string(),
                i.tally.usage_count.to_string(),
                i.keys.len().to_string(),
                fixed(i.amount, decimals),
                i.currency.clone(),
            ]
        })
        .collect();
    let line_rows = lines
        .iter()
        .map(|l| {
            vec![
                l.invoice_id.clone(),
                l.line_no.to_string(),
                spreadsheet_safe(&l.kind),
                spreadsheet_safe(&l.description),
                spreadsheet_safe(l.key_id.as_deref().unwrap_or_default()),
                l.calls.to_string(),
                l.unit_price_per_1000.to_string(),
                fixed(l.amount, decimals),
            ]
        })
        .collect();

    let strings = |values: &mut dyn Iterator<Item = &str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for v in values {
            b.append_value(v);
        }
        Arc::new(b.finish())
    };
    let u64s = |values: &mut dyn Iterator<Item = u64>| -> ArrayRef {
        let mut b = UInt64Builder::new();
        for v in values {
            b.append_value(v);
        }
        Arc::new(b.finish())
    };

    let period = month.period.to_string();
    let invoices_parquet = parquet(
        "invoices.parquet",
        vec![
            Field::new("invoice_id", DataType::Utf8, false),
            Field::new("period", DataType::Utf8, false),
            Field::new("customer_email", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, false),
            Field::new("successful_calls", DataType::UInt64, false),
            Field::new("failed_calls", DataType::UInt64, false),
            Field::new("usage_count", DataType::UInt64, false),
            Field::new("keys", DataType::UInt64, false),
            decimal_field("amount", decimals),
            Field::new("currency", DataType::Utf8, false),
        ],
        vec![
            strings(&mut invoices.iter().map(|i| i.invoice_id.as_str())),
            strings(&mut invoices.iter().map(|_| period.as_str())),
            strings(&mut invoices.iter().map(|i| i.customer_email.as_str())),
            strings(&mut invoices.iter().map(|i| i.plan.as_str())),
            u64s(&mut invoices.iter().map(|i| i.tally.successful_calls)),
            u64s(&mut invoices.iter().map(|i| i.tally.failed_calls)),
            u64s(&mut invoices.iter().map(|i| i.tally.usage_count)),
            u64s(&mut invoices.iter().map(|i| i.keys.len() as u64)),
            decimal_column(invoices.iter().map(|i| i.amount), decimals)?,
            strings(&mut invoices.iter().map(|i| i.currency.as_str())),
        ],
    )?;

    let mut line_no = UInt32Builder::new();
    let mut calls = Int64Builder::new();
    let mut key_id = StringBuilder::new();
    for l in &lines {
        line_no.append_value(l.line_no);
        calls.append_value(l.calls);
        key_id.append_option(l.key_id.as_deref());
    }
    let lines_parquet = parquet(
        "invoice_lines.parquet",
        vec![
            Field::new("invoice_id", DataType::Utf8, false),
            Field::new("line_no", DataType::UInt32, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("description", DataType::Utf8, false),
            Field::new("key_id", DataType::Utf8, true),
            Field::new("calls", DataType::Int64, false),
            decimal_field("unit_price_per_1000", PRICE_SCALE),
            decimal_field("amount", decimals),
        ],
        vec![
            strings(&mut lines.iter().map(|l| l.invoice_id.as_str())),
            Arc::new(line_no.finish()),
            strings(&mut lines.iter().map(|l| l.kind.as_str())),
            strings(&mut lines.iter().map(|l| l.description.as_str())),
            Arc::new(key_id.finish()),
            Arc::new(calls.finish()),
            decimal_column(lines.iter().map(|l| l.unit_price_per_1000), PRICE_SCALE)?,
            decimal_column(lines.iter().map(|l| l.amount), decimals)?,
        ],
    )?;

    // Daily usage with each key's customer and plan (none for key ids without a key item).
    let mut daily_key = StringBuilder::new();
    let mut daily_day = StringBuilder::new();
    let mut daily_email = StringBuilder::new();
    let mut daily_plan = StringBuilder::new();
    let (mut s, mut f, mut u) = (UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new());
    // A month has at most 31 days: format each once, not once per row.
    let day_names: std::collections::BTreeMap<meter_model::Day, String> =
        month.period.days().map(|d| (d, d.to_string())).collect();
    for row in &month.daily {
        let key = &month.daily_keys[row.key];
        daily_key.append_value(&key.key_id);
        match day_names.get(&row.day) {
            Some(name) => daily_day.append_value(name),
            None => daily_day.append_value(row.day.to_string()),
        }
        daily_email.append_option(key.customer_email.as_deref());
        daily_plan.append_option(key.plan.as_deref());
        s.append_value(row.tally.successful_calls);
        f.append_value(row.tally.failed_calls);
        u.append_value(row.tally.usage_count);
    }
    let daily_rows = month.daily.len() as u64;
    let daily_parquet = parquet(
        "usage_daily.parquet",
        vec![
            Field::new("key_id", DataType::Utf8, false),
            Field::new("day", DataType::Utf8, false),
            Field::new("customer_email", DataType::Utf8, true),
            Field::new("plan", DataType::Utf8, true),
            Field::new("successful_calls", DataType::UInt64, false),
            Field::new("failed_calls", DataType::UInt64, false),
            Field::new("usage_count", DataType::UInt64, false),
        ],
        vec![
            Arc::new(daily_key.finish()),
            Arc::new(daily_day.finish()),
            Arc::new(daily_email.finish()),
            Arc::new(daily_plan.finish()),
            Arc::new(s.finish()),
            Arc::new(f.finish()),
            Arc::new(u.finish()),
        ],
    )?;
    let (invoice_count, line_count) = (invoices.len() as u64, lines.len() as u64);
    let file = |name: &str, bytes, content_type, rows| ReportFile {
        name: name.to_owned(),
        bytes,
        content_type,
        rows,
    };
    Ok(vec![
        file("invoices.csv", csv_file("invoices.csv", &INVOICE_COLUMNS, invoice_rows)?, CSV, invoice_count),
        file("invoices.parquet", invoices_parquet, PARQUET, invoice_count),
        file("invoice_lines.csv", csv_file("invoice_lines.csv", &LINE_COLUMNS, line_rows)?, CSV, line_count),
        file("invoice_lines.parquet", lines_parquet, PARQUET, line_count),
        file("usage_daily.parquet", daily_parquet, PARQUET, daily_rows),
    ])
}

const CSV: &str = "text/csv";
const PARQUET: &str = "application/vnd.apache.parquet";

/// Lowercase hex SHA-256.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cells_that_a_spreadsheet_would_run_are_escaped() {
        // A valid address can start with `=`; a spreadsheet would run it as a formula.
        assert_eq!(spreadsheet_safe("=1+2@x.com"), "'=1+2@x.com");
        for risky in ["+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert!(spreadsheet_safe(risky).starts_with('\''), "{risky:?}");
        }
        assert_eq!(spreadsheet_safe("ada@example.com"), "ada@example.com");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
