//! Rollups of generated archives equal the generator's own record of the distinct events.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meter_archive::partition;
use meter_archive::{RollupError, rollup};
use meter_model::{Day, ObjectSource, Tally};
use meter_sim::archive::{ArchiveSpec, Generated, TsUnit, write_archive};
use meter_store::LocalDir;
use parquet::file::properties::WriterProperties;

fn day(text: &str) -> Day {
    text.parse().unwrap()
}

fn as_map(rows: &[meter_archive::RollupRow]) -> BTreeMap<(String, Day), Tally> {
    rows.iter().map(|r| ((r.key_id.clone(), r.day), r.tally)).collect()
}

async fn rollup_of(root: &Path, from: Day, to: Day) -> Result<meter_archive::Rollup, RollupError> {
    rollup(&LocalDir::new(root), from, to, |_, _| {}).await
}

fn spec(unit: TsUnit, extra_column: bool, seed: u64) -> ArchiveSpec {
    ArchiveSpec {
        ts_unit: unit,
        extra_column,
        duplicates_per_mille: 50,
        straddle_per_mille: 500,
        files_per_day: 3,
        ..ArchiveSpec::realistic(6_000, 40, day("2026-11-28"), 4, seed)
    }
}

fn truth_within(generated: &Generated, from: Day, to: Day) -> BTreeMap<(String, Day), Tally> {
    generated
        .truth
        .iter()
        .filter(|((_, d), _)| *d >= from && *d <= to)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[tokio::test]
async fn rollups_equal_the_distinct_events_for_every_timestamp_unit_and_extra_columns() {
    for (seed, unit, extra) in
        [(1, TsUnit::Millis, false), (2, TsUnit::Micros, true), (3, TsUnit::Nanos, false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let generated = write_archive(dir.path(), &spec(unit, extra, seed)).unwrap();
        assert!(generated.rows > 6_000, "the archive repeats some requests");
        let from = day("2026-11-28");
        let to = day("2026-12-01");
        let result = rollup_of(dir.path(), from, to).await.unwrap();
        assert_eq!(as_map(&result.rows), generated.truth, "{unit:?}");
        assert_eq!(result.stats.distinct, 6_000);
        assert_eq!(result.stats.rows, generated.rows);
        assert_eq!(result.stats.duplicates, generated.rows - 6_000);
        // A sub-range counts the events in the neighbouring folders too, and only its own days.
        let middle = rollup_of(dir.path(), day("2026-11-29"), day("2026-11-30")).await.unwrap();
        assert_eq!(as_map(&middle.rows), truth_within(&generated, day("2026-11-29"), day("2026-11-30")));
    }
}

#[tokio::test]
async fn a_file_written_twice_and_empty_days_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec(TsUnit::Millis, false, 7)).unwrap();
    let folder = dir.path().join(partition(day("2026-11-29")));
    std::fs::copy(folder.join("part-0001.parquet"), folder.join("part-0001-retry.parquet")).unwrap();
    // Hidden and marker files are not data.
    std::fs::write(folder.join("_SUCCESS"), b"").unwrap();
    std::fs::write(folder.join(".part-0002.parquet.crc"), b"crc").unwrap();
    let result = rollup_of(dir.path(), day("2026-11-25"), day("2026-12-03")).await.unwrap();
    assert_eq!(as_map(&result.rows), generated.truth);
    let empty = rollup_of(dir.path(), day("2026-10-01"), day("2026-10-31")).await.unwrap();
    assert!(empty.rows.is_empty());
    assert_eq!(empty.stats.files, 0);
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    write_archive(dir.path(), &spec(TsUnit::Millis, false, 9)).unwrap();
    let bad = dir.path().join(partition(day("2026-11-30"))).join("part-0000.parquet");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let err = rollup_of(dir.path(), day("2026-11-28"), day("2026-12-01")).await.unwrap_err();
    assert!(matches!(err, RollupError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("day=30/part-0000.parquet"), "{err}");
}

fn write_parquet(path: &Path, schema: Arc<arrow_schema::Schema>, columns: Vec<arrow_array::ArrayRef>) {
    write_parquet_with(path, schema, columns, WriterProperties::builder().build());
}

fn write_parquet_with(
    path: &Path,
    schema: Arc<arrow_schema::Schema>,
    columns: Vec<arrow_array::ArrayRef>,
    props: WriterProperties,
) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = arrow_array::RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn files_that_break_the_schema_are_errors_that_say_what_is_wrong() {
    use arrow_array::{ArrayRef, Int32Array, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(partition(day("2026-11-29"))).join("x.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("status_code", DataType::Int32, false),
    ]));
    let ts = day("2026-11-29").date().and_hms_opt(1, 0, 0).unwrap().and_utc().timestamp_millis();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["r1"])),
        Arc::new(StringArray::from(vec!["k1"])),
        Arc::new(TimestampMillisecondArray::from(vec![ts])),
        Arc::new(Int32Array::from(vec![200])),
    ];
    write_parquet(&path, schema, columns);
    let err = rollup_of(dir.path(), day("2026-11-29"), day("2026-11-29")).await.unwrap_err();
    assert!(err.to_string().contains("x.parquet: has no should_count column"), "{err}");
}

/// Writes a file of events `(request id, key, time, status)`, all marked billable.
fn events_file(path: &Path, events: &[(&str, &str, &str, i32)]) {
    events_file_with(
        path,
        events,
        WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build(),
    );
}

fn events_file_with(path: &Path, events: &[(&str, &str, &str, i32)], props: WriterProperties) {
    use arrow_array::{ArrayRef, BooleanArray, Int32Array, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("status_code", DataType::Int32, false),
        Field::new("should_count", DataType::Boolean, false),
    ]));
    let millis = |text: &str| meter_model::time::parse_instant(text).unwrap().timestamp_millis();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(events.iter().map(|e| e.0).collect::<Vec<_>>())),
        Arc::new(StringArray::from(events.iter().map(|e| e.1).collect::<Vec<_>>())),
        Arc::new(
            TimestampMillisecondArray::from(events.iter().map(|e| millis(e.2)).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(Int32Array::from(events.iter().map(|e| e.3).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(vec![true; events.len()])),
    ];
    write_parquet_with(path, schema, columns, props);
}

/// Firehose's conversion writes Snappy or GZIP; analysts' tools compact archives with ZSTD, LZ4 or no
/// compression at all. Every codec is read.
#[tokio::test]
async fn every_parquet_codec_is_read() {
    use parquet::basic::{Compression, GzipLevel, ZstdLevel};
    let codecs = [
        ("uncompressed", Compression::UNCOMPRESSED),
        ("snappy", Compression::SNAPPY),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
        ("lz4", Compression::LZ4),
        ("lz4_raw", Compression::LZ4_RAW),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (n, (name, codec)) in codecs.iter().enumerate() {
        let request = format!("r{n}");
        events_file_with(
            &dir.path().join(partition(day("2026-11-29"))).join(format!("{name}.parquet")),
            &[
                (request.as_str(), "k1", "2026-11-29T10:00:00Z", 200),
                ("shared", "k1", "2026-11-29T11:00:00Z", 404),
            ],
            WriterProperties::builder().set_compression(*codec).build(),
        );
    }
    let result = rollup_of(dir.path(), day("2026-11-29"), day("2026-11-29")).await.unwrap();
    let calls = codecs.len() as u64;
    assert_eq!(
        as_map(&result.rows),
        BTreeMap::from([(
            ("k1".to_owned(), day("2026-11-29")),
            Tally { successful_calls: calls, failed_calls: 1, usage_count: calls + 1 }
        )])
    );
    assert_eq!(result.stats.files, calls);
}

/// An event further than a day from its folder (a Firehose record that spanned days) never fails the
/// rollup: it is counted on its own day, once, even when that day was finished before it turned up,
/// and its file is reported.
#[tokio::test]
async fn events_far_from_their_folder_are_counted_on_their_own_day_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let folder = |d: &str| dir.path().join(partition(day(d)));
    events_file(
        &folder("2026-11-25").join("a.parquet"),
        &[("r1", "k1", "2026-11-25T01:00:00Z", 200), ("r2", "k1", "2026-11-25T01:30:00Z", 500)],
    );
    let late = folder("2026-11-29").join("late.parquet");
    events_file(
        &late,
        &[
            ("r1", "k1", "2026-11-25T01:00:00Z", 200), // already in its own folder: counted once
            ("r3", "k1", "2026-11-25T02:00:00Z", 200),
            ("r4", "k2", "2026-11-29T10:00:00Z", 200),
            ("r5", "k1", "2026-11-20T10:00:00Z", 200), // out of the range: reported only
            ("r6", "k3", "2026-12-02T10:00:00Z", 200), // a day still to come
        ],
    );
    let result = rollup_of(dir.path(), day("2026-11-25"), day("2026-12-02")).await.unwrap();
    let tally = |ok, failed, calls| Tally { successful_calls: ok, failed_calls: failed, usage_count: calls };
    assert_eq!(
        as_map(&result.rows),
        BTreeMap::from([
            (("k1".to_owned(), day("2026-11-25")), tally(2, 1, 3)),
            (("k2".to_owned(), day("2026-11-29")), tally(1, 0, 1)),
            (("k3".to_owned(), day("2026-12-02")), tally(1, 0, 1)),
        ])
    );
    assert_eq!(result.stats.misplaced, 4);
    assert_eq!(result.misplaced.len(), 1);
    assert!(result.misplaced[0].file.ends_with("late.parquet"), "{:?}", result.misplaced);
    assert_eq!(result.misplaced[0].events, 4);
    assert_eq!(result.misplaced[0].days, (day("2026-11-20"), day("2026-12-02")));
    // Rows stay sorted by day, then key.
    let order: Vec<_> = result.rows.iter().map(|r| (r.day, r.key_id.clone())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    // A range that holds none of the far events still reports the file.
    let only = rollup_of(dir.path(), day("2026-11-29"), day("2026-11-29")).await.unwrap();
    assert_eq!(as_map(&only.rows), BTreeMap::from([(("k2".to_owned(), day("2026-11-29")), tally(1, 0, 1))]));
    assert_eq!(only.misplaced.len(), 1);
}

/// Firehose's Parquet conversion may write `ts` as INT96; write one with the low-level writer.
#[tokio::test]
async fn int96_timestamps_are_read() {
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int96, Int96Type};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(partition(day("2026-11-29")));
    std::fs::create_dir_all(&folder).unwrap();
    let schema = Arc::new(
        parse_message_type(
            "message hive_schema {
                optional binary request_id (UTF8);
                optional binary key_id (UTF8);
                optional int96 ts;
                optional int32 status_code;
                optional boolean should_count;
                optional binary extra (UTF8);
            }",
        )
        .unwrap(),
    );
    // (request, key, day offset from 2026-11-29 in days, nanos of day, status, should_count)
    let rows: [(&'static str, &'static str, i64, u64, i32, bool); 5] = [
        ("a", "k1", 0, 0, 200, true),                  // 00:00:00.000
        ("b", "k1", 0, 86_399_999_000_000, 200, true), // 23:59:59.999
        ("b", "k1", 0, 86_399_999_000_000, 200, true), // repeated
        ("c", "k2", 0, 3_600_000_000_000, 503, false),
        ("d", "k2", 1, 0, 200, true), // next day: outside the range
    ];
    let file = std::fs::File::create(folder.join("hive.parquet")).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let defs = vec![1i16; rows.len()];
    type Spec = (&'static str, &'static str, i64, u64, i32, bool);
    let strings = |pick: fn(&Spec) -> &'static str| -> Vec<ByteArray> {
        rows.iter().map(|r| ByteArray::from(pick(r))).collect()
    };
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>().write_batch(&strings(|r| r.0), Some(&defs), None).unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>().write_batch(&strings(|r| r.1), Some(&defs), None).unwrap();
    col.close().unwrap();
    // INT96: nanoseconds of the day (little-endian u64) and the Julian day number.
    let julian_2026_11_29: i64 = 2_461_374;
    let int96: Vec<Int96> = rows
        .iter()
        .map(|r| {
            let mut v = Int96::new();
            let julian = u32::try_from(julian_2026_11_29 + r.2).unwrap();
            #[allow(clippy::cast_possible_truncation)]
            v.set_data(r.3 as u32, (r.3 >> 32) as u32, julian);
            v
        })
        .collect();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<Int96Type>().write_batch(&int96, Some(&defs), None).unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    let codes: Vec<i32> = rows.iter().map(|r| r.4).collect();
    col.typed::<Int32Type>().write_batch(&codes, Some(&defs), None).unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    let flags: Vec<bool> = rows.iter().map(|r| r.5).collect();
    col.typed::<BoolType>().write_batch(&flags, Some(&defs), None).unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>().write_batch(&strings(|_| "x"), Some(&defs), None).unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();

    let result = rollup_of(dir.path(), day("2026-11-29"), day("2026-11-29")).await.unwrap();
    let expected: BTreeMap<(String, Day), Tally> = [
        (
            ("k1".to_owned(), day("2026-11-29")),
            Tally { successful_calls: 2, failed_calls: 0, usage_count: 2 },
        ),
        (
            ("k2".to_owned(), day("2026-11-29")),
            Tally { successful_calls: 0, failed_calls: 1, usage_count: 1 },
        ),
    ]
    .into();
    assert_eq!(as_map(&result.rows), expected);
    assert_eq!(result.stats.duplicates, 1);
}

/// A file's row groups are decoded by jobs of their own, which end in any order: each request is
/// still counted once, as its first copy in file and row-group order says.
#[tokio::test]
async fn row_groups_decoded_apart_count_each_request_as_its_first_copy() {
    let write = |path: &Path, events: &[(String, String, i32)]| {
        let noon = "2026-11-29T12:00:00Z";
        let events: Vec<_> =
            events.iter().map(|(id, key, status)| (id.as_str(), key.as_str(), noon, *status)).collect();
        events_file_with(path, &events, WriterProperties::builder().set_max_row_group_size(50).build());
    };
    // 2,000 requests in 40 row groups of 50; every tenth is repeated 500 rows later under another key
    // and status, and a second file repeats the first hundred under a third key.
    let mut first: Vec<(String, String, i32)> =
        (0..2000).map(|i| (format!("r{i}"), format!("k{}", i % 7), 200)).collect();
    for i in (0..1500).step_by(10) {
        first.insert(i + 500, (format!("r{i}"), "repeat".into(), 500));
    }
    let second: Vec<(String, String, i32)> =
        (0..100).map(|i| (format!("r{i}"), "other-file".into(), 404)).collect();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(partition(day("2026-11-29")));
    write(&folder.join("a.parquet"), &first);
    write(&folder.join("b.parquet"), &second);
    let mut truth: BTreeMap<(String, Day), Tally> = BTreeMap::new();
    for i in 0..2000 {
        let tally = truth.entry((format!("k{}", i % 7), day("2026-11-29"))).or_default();
        tally.successful_calls += 1;
        tally.usage_count += 1;
    }
    for _ in 0..3 {
        let result = rollup_of(dir.path(), day("2026-11-29"), day("2026-11-29")).await.unwrap();
        assert_eq!(as_map(&result.rows), truth);
        assert_eq!((result.stats.distinct, result.stats.duplicates), (2000, 250));
    }
}

/// A folder whose footers say it holds more events than the memory allows is refused before it is
/// decoded, naming the folder and what to do; within the budget the rollup is the same as without.
#[tokio::test]
async fn a_day_beyond_the_memory_budget_is_refused_with_the_advice_to_use_athena() {
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec(TsUnit::Millis, false, 11)).unwrap();
    let (from, to) = (day("2026-11-28"), day("2026-12-01"));
    let archive = LocalDir::new(dir.path());
    // 6,000 events over four days: at 1 MiB an event, no folder fits 100 MiB.
    let tight = meter_archive::RollupBudget { memory_mib: 100, bytes_per_event: 1 << 20, base_mib: 10 };
    let err = meter_archive::rollup_within(&archive, from, to, Some(tight), |_, _| {}).await.unwrap_err();
    assert!(
        matches!(err, RollupError::TooLarge { need_mib, memory_mib: 100, .. } if need_mib > 100),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("folder holds") && text.contains("METER_ROLLUP_ENGINE=athena"), "{text}");
    let roomy = meter_archive::RollupBudget { memory_mib: 1024, bytes_per_event: 240, base_mib: 100 };
    let within = meter_archive::rollup_within(&archive, from, to, Some(roomy), |_, _| {}).await.unwrap();
    assert_eq!(as_map(&within.rows), truth_within(&generated, from, to));

    // The refusal reads the footers alone: not one file is fetched whole, so a folder far beyond the
    // memory cannot exhaust it while it is fetched.
    let counting = CountingReads { inner: archive, whole: AtomicUsize::new(0), tails: AtomicUsize::new(0) };
    let err = meter_archive::rollup_within(&counting, from, to, Some(tight), |_, _| {}).await.unwrap_err();
    assert!(matches!(err, RollupError::TooLarge { .. }), "{err:?}");
    assert_eq!(counting.whole.load(Ordering::Relaxed), 0, "no file fetched whole");
    assert!(counting.tails.load(Ordering::Relaxed) > 0, "the footers were read");
}

/// An archive that counts how its files are read: whole, or only their ends.
struct CountingReads {
    inner: LocalDir,
    whole: AtomicUsize,
    tails: AtomicUsize,
}

impl ObjectSource for CountingReads {
    async fn list(&self, relative: &str) -> Result<Vec<String>, meter_model::StoreError> {
        self.inner.list(relative).await
    }

    async fn get(&self, relative: &str) -> Result<bytes::Bytes, meter_model::StoreError> {
        self.whole.fetch_add(1, Ordering::Relaxed);
        self.inner.get(relative).await
    }

    async fn get_tail(&self, relative: &str, len: u64) -> Result<bytes::Bytes, meter_model::StoreError> {
        self.tails.fetch_add(1, Ordering::Relaxed);
        self.inner.get_tail(relative, len).await
    }

    async fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<String, meter_model::StoreError> {
        self.inner.put_new(relative, bytes, content_type).await
    }

    fn location(&self, relative: &str) -> String {
        self.inner.location(relative)
    }

    async fn download_link(
        &self,
        relative: &str,
        expires_in: std::time::Duration,
    ) -> Result<String, meter_model::StoreError> {
        self.inner.download_link(relative, expires_in).await
    }
}
