//! The archive's format (CONTRACTS.md §5): its columns, its Hive partitions, what is a data file, and the
//! encoders every writer of it uses (Parquet for the local writer, JSON rows for Firehose's conversion,
//! JSON lines for rejects). The column names are written here and nowhere else.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use meter_model::{Day, RejectedLine, StoreError, UsageEvent};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, compute_leaves};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The archive's column names, in the schema's order.
pub mod column {
    /// Identifies the request; the rollup counts each once.
    pub const REQUEST_ID: &str = "request_id";
    /// The key id as the usage line gave it.
    pub const KEY_ID: &str = "key_id";
    /// Event time, UTC.
    pub const TS: &str = "ts";
    /// HTTP status, 100–599.
    pub const STATUS_CODE: &str = "status_code";
    /// The backend's billable mark.
    pub const SHOULD_COUNT: &str = "should_count";
    /// HTTP method (nullable).
    pub const METHOD: &str = "method";
    /// Route template (nullable).
    pub const RESOURCE: &str = "resource";
    /// Backend latency (nullable).
    pub const LATENCY_MS: &str = "latency_ms";
    /// Every column, in order.
    pub const ALL: [&str; 8] =
        [REQUEST_ID, KEY_ID, TS, STATUS_CODE, SHOULD_COUNT, METHOD, RESOURCE, LATENCY_MS];
}

/// Folder (under the archive root) of the rollups reconcile writes: `rollups/day=YYYY-MM-DD/`.
pub const ROLLUPS_DIR: &str = "rollups";

/// The key directory snapshot beside the archive: which customer and plan each key id bills to, for
/// the analysts' joins (the Glue table `keys`, `notebooks/`). Rewritten whole by each reconcile run.
pub const KEYS_SNAPSHOT: &str = "keys/keys.parquet";

/// The folder of a day's rollup, relative to the archive root.
#[must_use]
pub fn rollup_folder(day: Day) -> String {
    format!("{ROLLUPS_DIR}/day={day}")
}

/// Folder (under the archive root) of rejected usage lines.
pub const REJECTS_DIR: &str = "rejects";

/// The columns of the archive, in order.
#[must_use]
pub fn archive_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(column::REQUEST_ID, DataType::Utf8, false),
        Field::new(column::KEY_ID, DataType::Utf8, false),
        Field::new(column::TS, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new(column::STATUS_CODE, DataType::Int32, false),
        Field::new(column::SHOULD_COUNT, DataType::Boolean, false),
        Field::new(column::METHOD, DataType::Utf8, true),
        Field::new(column::RESOURCE, DataType::Utf8, true),
        Field::new(column::LATENCY_MS, DataType::Int32, true),
    ]))
}

/// The Hive partition of a day: `year=YYYY/month=MM/day=DD`.
#[must_use]
pub fn partition(day: Day) -> String {
    partition_keys(day).map(|(name, value)| format!("{name}={value}")).join("/")
}

/// Firehose's dynamic-partitioning keys of a day: `year`, `month` and `day`, zero-padded, matching
/// [`partition`].
#[must_use]
pub fn partition_keys(day: Day) -> [(&'static str, String); 3] {
    let text = day.to_string();
    [("year", text[..4].to_owned()), ("month", text[5..7].to_owned()), ("day", text[8..10].to_owned())]
}

fn archive_error(operation: &str, err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other { operation: operation.into(), source: err.into() }
}

/// Encodes events as one Parquet file (Snappy, the codec Firehose's conversion uses).
pub fn encode_parquet(events: &[UsageEvent<'_>]) -> Result<Vec<u8>, StoreError> {
    let rows = events.len();
    let mut request_id = StringBuilder::with_capacity(rows, rows * 36);
    let mut key_id = StringBuilder::with_capacity(rows, rows * 12);
    let mut ts = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut status_code = Int32Builder::with_capacity(rows);
    let mut should_count = BooleanBuilder::with_capacity(rows);
    let mut method = StringBuilder::with_capacity(rows, rows * 4);
    let mut resource = StringBuilder::with_capacity(rows, rows * 16);
    let mut latency_ms = Int32Builder::with_capacity(rows);
    for event in events {
        request_id.append_value(&event.request_id);
        key_id.append_value(&event.key_id);
        ts.append_value(event.timestamp.timestamp_millis());
        status_code.append_value(i32::from(event.status_code));
        should_count.append_value(event.should_count);
        method.append_option(event.method.as_deref());
        resource.append_option(event.resource.as_deref());
        // The parser admits only latencies that fit an int32.
        latency_ms.append_option(event.latency_ms.and_then(|ms| i32::try_from(ms).ok()));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(request_id.finish()),
        Arc::new(key_id.finish()),
        Arc::new(ts.finish()),
        Arc::new(status_code.finish()),
        Arc::new(should_count.finish()),
        Arc::new(method.finish()),
        Arc::new(resource.finish()),
        Arc::new(latency_ms.finish()),
    ];
    parquet_file(archive_schema(), columns).map_err(|e| archive_error("encode Parquet", e))
}

/// One Parquet file (Snappy, the codec Firehose's conversion uses) holding `columns` as one batch.
/// Every Parquet file the project writes is made here.
///
/// The file is what [`ArrowWriter`] writes, byte for byte, but its column chunks are encoded on every
/// core: encoding is most of the time it takes to write a rollup or a report, and it would otherwise
/// keep one core busy while the others wait.
pub fn parquet_file(
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    // Row groups as ArrowWriter cuts them.
    let group_rows = props.max_row_group_size().max(1);
    let mut buffer = Vec::new();
    let (mut file, groups) =
        ArrowWriter::try_new(&mut buffer, schema.clone(), Some(props))?.into_serialized_writer()?;
    let mut chunks_to_encode = Vec::new();
    for (group, start) in (0..batch.num_rows()).step_by(group_rows).enumerate() {
        let rows = batch.slice(start, group_rows.min(batch.num_rows() - start));
        let mut leaves = Vec::new();
        for (field, array) in schema.fields().iter().zip(rows.columns()) {
            leaves.extend(compute_leaves(field, array)?);
        }
        let writers = groups.create_column_writers(group)?;
        chunks_to_encode.extend(writers.into_iter().zip(leaves).map(|(writer, leaf)| (group, writer, leaf)));
    }
    let encoded: Vec<(usize, ArrowColumnChunk)> = chunks_to_encode
        .into_par_iter()
        .map(|(group, mut writer, leaf)| {
            writer.write(&leaf)?;
            Ok((group, writer.close()?))
        })
        .collect::<Result<_, parquet::errors::ParquetError>>()?;
    let mut encoded = encoded.into_iter().peekable();
    while let Some(&(group, _)) = encoded.peek() {
        let mut row_group = file.next_row_group()?;
        while let Some((_, chunk)) = encoded.next_if(|(next, _)| *next == group) {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    file.close()?;
    Ok(buffer)
}

/// An archive row as Firehose's Parquet conversion reads it (`ts` in epoch milliseconds). The field
/// names are the columns' (a test holds them to [`column::ALL`]).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JsonRow {
    /// `requestId`.
    pub request_id: String,
    /// `keyId`.
    pub key_id: String,
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// HTTP status.
    pub status_code: i32,
    /// Billable mark.
    pub should_count: bool,
    /// HTTP method.
    pub method: Option<String>,
    /// Route.
    pub resource: Option<String>,
    /// Latency.
    pub latency_ms: Option<i32>,
}

impl From<&UsageEvent<'_>> for JsonRow {
    fn from(event: &UsageEvent<'_>) -> Self {
        Self {
            request_id: event.request_id.to_string(),
            key_id: event.key_id.to_string(),
            ts: event.timestamp.timestamp_millis(),
            status_code: i32::from(event.status_code),
            should_count: event.should_count,
            method: event.method.as_deref().map(str::to_owned),
            resource: event.resource.as_deref().map(str::to_owned),
            latency_ms: event.latency_ms.and_then(|ms| i32::try_from(ms).ok()),
        }
    }
}

/// Encodes events as newline-delimited [`JsonRow`]s: what the Firehose transformer hands back.
pub fn encode_json_rows(events: &[UsageEvent<'_>]) -> Result<Vec<u8>, StoreError> {
    let mut rows = Vec::with_capacity(events.len() * 200);
    for event in events {
        serde_json::to_writer(&mut rows, &JsonRow::from(event))
            .map_err(|e| archive_error("encode archive rows", e))?;
        rows.push(b'\n');
    }
    Ok(rows)
}

/// Encodes rejected lines as JSON lines.
pub fn encode_rejects(rejects: &[RejectedLine]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for reject in rejects {
        serde_json::to_writer(&mut out, reject).map_err(|e| archive_error("encode rejects", e))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Whether a listed file is data: Hive and Spark conventions hide names starting with `.` or `_`
/// (`_SUCCESS`, `.crc` files, writers' temporary files).
#[must_use]
pub fn is_data_file(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    !(name.starts_with('.') || name.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::time::parse_instant;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn partitions_are_hive_style_by_utc_day() {
        assert_eq!(partition("2026-01-05".parse().unwrap()), "year=2026/month=01/day=05");
    }

    fn event() -> UsageEvent<'static> {
        UsageEvent {
            request_id: "r1".into(),
            key_id: "0123456789ab".into(),
            timestamp: parse_instant("2026-11-29T14:03:07.123Z").unwrap(),
            status_code: 200,
            should_count: true,
            method: None,
            resource: Some("/v1/items/{id}".into()),
            latency_ms: Some(42),
            dropped: meter_model::DroppedFields::NONE,
        }
    }

    #[test]
    fn parquet_has_the_contract_schema_with_millisecond_utc_timestamps() {
        let event = event();
        let bytes = encode_parquet(&[event.clone(), event]).unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 2);
        let schema = meta.file_metadata().schema_descr();
        let names: Vec<_> = schema.columns().iter().map(|c| c.name().to_owned()).collect();
        assert_eq!(
            names,
            ["request_id", "key_id", "ts", "status_code", "should_count", "method", "resource", "latency_ms"]
        );
        let ts = schema.column(2);
        assert_eq!(ts.physical_type(), parquet::basic::Type::INT64);
        assert!(
            matches!(
                ts.logical_type_ref(),
                Some(parquet::basic::LogicalType::Timestamp {
                    is_adjusted_to_u_t_c: true,
                    unit: parquet::basic::TimeUnit::MILLIS
                })
            ),
            "{:?}",
            ts.logical_type_ref()
        );
    }

    #[test]
    fn json_rows_name_the_columns_of_the_schema() {
        let rows = encode_json_rows(&[event()]).unwrap();
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&rows).unwrap();
        assert_eq!(row.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut names = column::ALL.to_vec();
            names.sort_unstable();
            names
        });
        let schema = archive_schema();
        assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), column::ALL);
        assert_eq!(row["ts"], 1_795_960_987_123_i64);
    }

    #[test]
    fn partition_keys_match_the_partition() {
        let day = "2026-01-05".parse().unwrap();
        let [(_, year), (_, month), (_, d)] = partition_keys(day);
        assert_eq!(format!("year={year}/month={month}/day={d}"), partition(day));
    }
}
