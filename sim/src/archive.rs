//! Synthetic archives with a known answer, for tests and the rollup benchmark: the files follow
//! CONTRACTS.md §5 and carry what real archives carry (requests repeated across files, events in the
//! neighbouring day's folder, events at the first and last millisecond of a day, a choice of timestamp
//! units, extra columns), and the generator keeps its own record of the distinct events.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, StringBuilder};
use arrow_array::types::{TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType};
use arrow_array::{ArrayRef, PrimitiveArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveTime, Utc};
use meter_archive::format::{column, parquet_file, partition};
use meter_model::{Day, Tally};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rustc_hash::FxHashMap;

const MS_PER_DAY: i64 = 86_400_000;

/// The unit a file's `ts` column is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsUnit {
    /// INT64 milliseconds (what the archive writer and Firehose's conversion write).
    Millis,
    /// INT64 microseconds.
    Micros,
    /// INT64 nanoseconds.
    Nanos,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct ArchiveSpec {
    /// Distinct requests.
    pub events: u64,
    /// Key ids to spread them over, most used first (popularity is skewed toward the first ones).
    pub keys: Vec<String>,
    /// The first day.
    pub first_day: Day,
    /// How many days.
    pub days: u32,
    /// Files per day folder.
    pub files_per_day: u32,
    /// Extra rows that repeat an earlier request of the same day, per thousand requests.
    pub duplicates_per_mille: u32,
    /// Requests of a day's first five minutes written to the previous day's folder, per thousand of
    /// those (Firehose partitions a record by its first event).
    pub straddle_per_mille: u32,
    /// The unit of `ts`.
    pub ts_unit: TsUnit,
    /// Adds a column the contract does not know (readers must ignore it).
    pub extra_column: bool,
    /// Seed of the generator: the same spec writes the same files.
    pub seed: u64,
}

impl ArchiveSpec {
    /// A spec with `keys` generated key ids (`k` and eleven digits) and the benchmark's mix: 1% of
    /// rows repeated, a few events in the neighbouring folder, 8 files a day.
    #[must_use]
    pub fn realistic(events: u64, keys: u32, first_day: Day, days: u32, seed: u64) -> Self {
        Self {
            events,
            keys: (0..keys).map(|k| format!("k{k:011}")).collect(),
            first_day,
            days,
            files_per_day: 8,
            duplicates_per_mille: 10,
            straddle_per_mille: 100,
            ts_unit: TsUnit::Millis,
            extra_column: false,
            seed,
        }
    }
}

/// What was generated: the distinct counts per key and day, and how much was written.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Distinct requests per key id and day, by the counting rules.
    pub truth: BTreeMap<(String, Day), Tally>,
    /// Rows written, repeats included.
    pub rows: u64,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding failed.
    #[error("cannot encode Parquet")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The spec makes no sense.
    #[error("invalid spec: {0}")]
    Spec(String),
}

#[derive(Debug, Clone)]
struct Event {
    request_id: String,
    key: u32,
    ts_ms: i64,
    status: i32,
    should_count: bool,
}

fn status_code(rng: &mut Xoshiro256PlusPlus) -> i32 {
    match rng.random_range(0..1000) {
        0..850 => 200,
        850..900 => 201,
        900..920 => 204,
        920..930 => 304,
        930..935 => 101,
        935..975 => [400, 401, 403, 404, 429][rng.random_range(0..5usize)],
        _ => [500, 502, 503][rng.random_range(0..3usize)],
    }
}

fn request_id(rng: &mut Xoshiro256PlusPlus) -> String {
    let v: u128 = rng.random();
    let hex = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn day_start_ms(day: Day) -> i64 {
    day.date().and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

/// Writes the archive under `root` and returns what it holds.
pub fn write_archive(root: &Path, spec: &ArchiveSpec) -> Result<Generated, SynthError> {
    if spec.keys.is_empty() || spec.days == 0 || spec.files_per_day == 0 {
        return Err(SynthError::Spec("needs at least one key, one day and one file per day".into()));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let key_count = spec.keys.len() as u64;
    let mut truth: FxHashMap<(u32, i64), Tally> = FxHashMap::default();
    let mut generated = Generated::default();
    // Rows destined to each day's folder, filled a day ahead (straddlers go back one folder).
    let mut folders: BTreeMap<u32, Vec<Vec<Event>>> = BTreeMap::new();
    let per_day = spec.events / u64::from(spec.days);
    for day_index in 0..spec.days {
        let day_start = day_start_ms(day_n(spec.first_day, day_index));
        let events_today = if day_index + 1 == spec.days {
            spec.events - per_day * u64::from(spec.days - 1)
        } else {
            per_day
        };
        let mut today: Vec<Event> = Vec::with_capacity(usize::try_from(events_today).unwrap_or(0));
        for n in 0..events_today {
            let offset = match n {
                0 => 0,
                1 => MS_PER_DAY - 1,
                _ => rng.random_range(0..MS_PER_DAY),
            };
            // The product of two uniform draws favours the first keys, as real traffic does.
            let key = rng.random_range(0..key_count) * rng.random_range(1..=key_count) / key_count;
            let event = Event {
                request_id: request_id(&mut rng),
                key: u32::try_from(key).unwrap_or(0),
                ts_ms: day_start + offset,
                status: status_code(&mut rng),
                should_count: rng.random_range(0..10) != 0,
            };
            let status = u16::try_from(event.status).unwrap_or(0);
            truth.entry((event.key, day_start)).or_default().add(Tally::of_call(status, event.should_count));
            let straddles =
                day_index > 0 && offset < 5 * 60_000 && rng.random_range(0..1000) < spec.straddle_per_mille;
            let folder = if straddles { day_index - 1 } else { day_index };
            let file = rng.random_range(0..spec.files_per_day) as usize;
            let files = folders
                .entry(folder)
                .or_insert_with(|| (0..spec.files_per_day).map(|_| Vec::new()).collect());
            // Straddlers go to the last file of the day before, as a record that began before midnight.
            let file = if straddles { spec.files_per_day as usize - 1 } else { file };
            files[file].push(event.clone());
            today.push(event);
        }
        let repeats = events_today * u64::from(spec.duplicates_per_mille) / 1000;
        for _ in 0..repeats {
            if today.is_empty() {
                break;
            }
            let original = today[rng.random_range(0..today.len())].clone();
            let file = rng.random_range(0..spec.files_per_day) as usize;
            if let Some(files) = folders.get_mut(&day_index) {
                files[file].push(original);
            }
        }
        // The folder before today's can take no more straddlers: write it.
        if let Some(files) = day_index.checked_sub(1).and_then(|before| folders.remove(&before)) {
            write_folder(root, spec, day_n(spec.first_day, day_index - 1), files, &mut generated)?;
        }
    }
    for (day_index, files) in std::mem::take(&mut folders) {
        write_folder(root, spec, day_n(spec.first_day, day_index), files, &mut generated)?;
    }
    generated.truth = truth
        .into_iter()
        .map(|((key, start), tally)| {
            let day = Day::of(DateTime::<Utc>::from_timestamp_millis(start).unwrap_or_default());
            ((spec.keys[key as usize].clone(), day), tally)
        })
        .collect();
    Ok(generated)
}

fn day_n(first: Day, n: u32) -> Day {
    Day::from_date(first.date() + chrono::Duration::days(i64::from(n)))
}

fn write_folder(
    root: &Path,
    spec: &ArchiveSpec,
    day: Day,
    files: Vec<Vec<Event>>,
    generated: &mut Generated,
) -> Result<(), SynthError> {
    let dir = root.join(partition(day));
    std::fs::create_dir_all(&dir)
        .map_err(|source| SynthError::Io { path: dir.display().to_string(), source })?;
    for (index, events) in files.into_iter().enumerate() {
        if events.is_empty() {
            continue;
        }
        let bytes = encode(spec, &events)?;
        let path = dir.join(format!("part-{index:04}.parquet"));
        std::fs::write(&path, &bytes)
            .map_err(|source| SynthError::Io { path: path.display().to_string(), source })?;
        generated.rows += events.len() as u64;
        generated.files += 1;
        generated.bytes += bytes.len() as u64;
    }
    Ok(())
}

fn encode(spec: &ArchiveSpec, events: &[Event]) -> Result<Vec<u8>, SynthError> {
    let rows = events.len();
    let mut request_id = StringBuilder::with_capacity(rows, rows * 36);
    let mut key_id = StringBuilder::with_capacity(rows, rows * 12);
    let mut status = Int32Builder::with_capacity(rows);
    let mut should_count = BooleanBuilder::with_capacity(rows);
    let mut method = StringBuilder::with_capacity(rows, rows * 4);
    let mut extra = StringBuilder::with_capacity(rows, rows * 8);
    for event in events {
        request_id.append_value(&event.request_id);
        key_id.append_value(&spec.keys[event.key as usize]);
        status.append_value(event.status);
        should_count.append_value(event.should_count);
        method.append_value("GET");
        extra.append_value("eu-west-1");
    }
    let millis = events.iter().map(|e| e.ts_ms);
    let (ts, unit): (ArrayRef, TimeUnit) = match spec.ts_unit {
        TsUnit::Millis => (
            Arc::new(
                PrimitiveArray::<TimestampMillisecondType>::from_iter_values(millis).with_timezone("UTC"),
            ),
            TimeUnit::Millisecond,
        ),
        TsUnit::Micros => (
            Arc::new(
                PrimitiveArray::<TimestampMicrosecondType>::from_iter_values(millis.map(|ms| ms * 1_000))
                    .with_timezone("UTC"),
            ),
            TimeUnit::Microsecond,
        ),
        TsUnit::Nanos => (
            Arc::new(
                PrimitiveArray::<TimestampNanosecondType>::from_iter_values(millis.map(|ms| ms * 1_000_000))
                    .with_timezone("UTC"),
            ),
            TimeUnit::Nanosecond,
        ),
    };
    let mut fields = vec![
        Field::new(column::REQUEST_ID, DataType::Utf8, false),
        Field::new(column::KEY_ID, DataType::Utf8, false),
        Field::new(column::TS, DataType::Timestamp(unit, Some("UTC".into())), false),
        Field::new(column::STATUS_CODE, DataType::Int32, false),
        Field::new(column::SHOULD_COUNT, DataType::Boolean, false),
        Field::new(column::METHOD, DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(request_id.finish()),
        Arc::new(key_id.finish()),
        ts,
        Arc::new(status.finish()),
        Arc::new(should_count.finish()),
        Arc::new(method.finish()),
    ];
    if spec.extra_column {
        // First, so that readers cannot rely on column positions either.
        fields.insert(0, Field::new("aws_region", DataType::Utf8, true));
        columns.insert(0, Arc::new(extra.finish()));
    }
    Ok(parquet_file(Arc::new(Schema::new(fields)), columns)?)
}
