//! Rollup files: Parquet or CSV with the columns of CONTRACTS.md §6.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use meter_model::{ApiKeyRecord, Day, ObjectSink, StoreError, Tally};
use rayon::prelude::*;

use crate::format::{parquet_file, rollup_folder};

use crate::rollup::RollupRow;

/// The rollup's column names, in order: in its Parquet and CSV files and in the rollup query's result.
pub const ROLLUP_COLUMNS: [&str; 5] = ["key_id", "day", "successful_calls", "failed_calls", "usage_count"];

/// The rollup's columns: `key_id`, `day` (`YYYY-MM-DD`, as the counters' sort key), the three counts.
#[must_use]
pub fn rollup_schema() -> SchemaRef {
    let [key_id, day, counts @ ..] = ROLLUP_COLUMNS;
    let mut fields = vec![Field::new(key_id, DataType::Utf8, false), Field::new(day, DataType::Utf8, false)];
    fields.extend(counts.map(|name| Field::new(name, DataType::UInt64, false)));
    Arc::new(Schema::new(fields))
}

/// A rollup file could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the rollup as {format}")]
pub struct EncodeError {
    format: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl EncodeError {
    /// An error of encoding `format`.
    pub fn new(format: &'static str, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { format, source: Box::new(err) }
    }
}

fn encode_error(format: &'static str, err: impl std::error::Error + Send + Sync + 'static) -> EncodeError {
    EncodeError::new(format, err)
}

/// Encodes rollup rows as Parquet (Snappy).
pub fn rollup_parquet(rows: &[RollupRow]) -> Result<Vec<u8>, EncodeError> {
    // Each column is its own pass over the rows, so the columns are built on every core.
    let count = |pick: fn(&Tally) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|row| pick(&row.tally))))
    };
    let builders: [&(dyn Fn() -> ArrayRef + Sync); 5] = [
        &|| Arc::new(StringArray::from_iter_values(rows.iter().map(|row| &row.key_id))),
        &|| day_column(rows),
        &|| count(|tally| tally.successful_calls),
        &|| count(|tally| tally.failed_calls),
        &|| count(|tally| tally.usage_count),
    ];
    let columns: Vec<ArrayRef> = builders.par_iter().map(|build| build()).collect();
    parquet_file(rollup_schema(), columns).map_err(|e| encode_error("Parquet", e))
}

/// The rows' days as `YYYY-MM-DD` text, each day formatted once (rows come a day at a time).
fn day_column(rows: &[RollupRow]) -> ArrayRef {
    let mut days = StringBuilder::with_capacity(rows.len(), rows.len() * 10);
    let mut last: Option<(Day, String)> = None;
    for row in rows {
        match &last {
            Some((day, text)) if *day == row.day => days.append_value(text),
            _ => {
                let text = row.day.to_string();
                days.append_value(&text);
                last = Some((row.day, text));
            }
        }
    }
    Arc::new(days.finish())
}

/// Encodes rollup rows as CSV with a header.
pub fn rollup_csv(rows: &[RollupRow]) -> Result<Vec<u8>, EncodeError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(ROLLUP_COLUMNS).map_err(|e| encode_error("CSV", e))?;
    for row in rows {
        writer
            .write_record([
                row.key_id.as_str(),
                &row.day.to_string(),
                &row.tally.successful_calls.to_string(),
                &row.tally.failed_calls.to_string(),
                &row.tally.usage_count.to_string(),
            ])
            .map_err(|e| encode_error("CSV", e))?;
    }
    writer.into_inner().map_err(|e| encode_error("CSV", e.into_error()))
}

/// Rollup rows as a file, by the extension of `path`: `.parquet` or `.csv`; any other is refused
/// rather than written in a format its name does not say.
pub fn encode_rollup_file(path: &str, rows: &[RollupRow]) -> Result<Vec<u8>, EncodeError> {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("csv") => rollup_csv(rows),
        Some("parquet") => rollup_parquet(rows),
        _ => Err(EncodeError::new(
            "a file named .parquet or .csv",
            std::io::Error::other(format!("{path} names neither format")),
        )),
    }
}

/// The key directory snapshot's columns ([`crate::format::KEYS_SNAPSHOT`]): `key_id`, `customer_email`,
/// `plan` (null for the pricing's default plan), `name`, `status`, `created_at`, `revoked_at`. No hash
/// of a key, ever: the snapshot is for joins, not for authorizing.
#[must_use]
pub fn key_directory_schema() -> SchemaRef {
    let time = DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("key_id", DataType::Utf8, false),
        Field::new("customer_email", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("created_at", time.clone(), false),
        Field::new("revoked_at", time, true),
    ]))
}

/// Encodes the key directory snapshot as Parquet (Snappy).
pub fn key_directory_parquet(keys: &[ApiKeyRecord]) -> Result<Vec<u8>, EncodeError> {
    let mut key_id = StringBuilder::new();
    let mut email = StringBuilder::new();
    let mut plan = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut status = StringBuilder::new();
    let mut created = TimestampMillisecondBuilder::with_capacity(keys.len()).with_timezone("UTC");
    let mut revoked = TimestampMillisecondBuilder::with_capacity(keys.len()).with_timezone("UTC");
    for key in keys {
        key_id.append_value(key.id.as_str());
        email.append_value(key.user_email.as_str());
        plan.append_option(key.plan.as_ref().map(|p| p.as_str()));
        name.append_option(key.name.as_deref());
        status.append_value(key.status.as_str());
        created.append_value(key.created_at.timestamp_millis());
        revoked.append_option(key.revoked_at.map(|at| at.timestamp_millis()));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(key_id.finish()),
        Arc::new(email.finish()),
        Arc::new(plan.finish()),
        Arc::new(name.finish()),
        Arc::new(status.finish()),
        Arc::new(created.finish()),
        Arc::new(revoked.finish()),
    ];
    parquet_file(key_directory_schema(), columns).map_err(|e| encode_error("Parquet", e))
}

/// Rollups could not be written beside the archive.
#[derive(Debug, thiserror::Error)]
pub enum RollupWriteError {
    /// A day's file could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A day's file could not be written.
    #[error("cannot write {path}")]
    Store {
        /// The file, relative to the archive.
        path: String,
        /// The adapter's error.
        #[source]
        source: StoreError,
    },
}

/// Writes `rollups/day=YYYY-MM-DD/rollup.parquet` for every day of `from..=to` (empty days too, so a
/// reader can tell "no usage" from "not computed"); `rows` are a rollup's, sorted by day. Returns
/// where the files are.
pub async fn write_rollups<A: ObjectSink>(
    archive: &A,
    rows: &[RollupRow],
    from: Day,
    to: Day,
) -> Result<Vec<String>, RollupWriteError> {
    let mut written = Vec::new();
    let mut day = from;
    while day <= to {
        let rows = &rows[rows.partition_point(|r| r.day < day)..rows.partition_point(|r| r.day <= day)];
        let path = format!("{}/rollup.parquet", rollup_folder(day));
        let put = archive.put(&path, rollup_parquet(rows)?, "application/vnd.apache.parquet").await;
        written.push(put.map_err(|source| RollupWriteError::Store { path, source })?);
        day = day.succ();
    }
    Ok(written)
}
