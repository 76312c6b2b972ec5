//! Authoritative rollups from the Parquet archive (CONTRACTS.md §5, §6).
//!
//! The work is deduplicating request ids, so the engine is built around it:
//! - each row group of each file is decoded by a job of its own on the rayon pool, reading only the
//!   five columns the counting rules need; every row becomes 20 bytes: a 128-bit hash of its request
//!   id, the key (an index into the row group's own dictionary) and its class (billable, failed);
//! - rows are split by event day and by the hash's top bits into shards while they are decoded, so the
//!   deduplication of a day runs on every core, each shard with a small hash set, without another pass;
//! - folders are read in day order and a day is finished as soon as the folder after it has been read
//!   (events sit in their own day's folder or a neighbouring one), so memory holds about two days of
//!   rows, never the whole range;
//! - a folder's decode is queued on the pool before the previous folder is waited for and merged, and
//!   a completed day is counted by a job per shard, queued behind the decodes: the thread feeding
//!   folders waits for nothing but the folder it merges, so the pool always has work queued;
//! - no job waits for another: a job that waited inside the pool (a parallel iterator's join) would
//!   take other jobs meanwhile, and could only return when the last of them ended, holding up
//!   whatever waited for it. Each job sends its result on a channel instead;
//! - a row's key is translated to the engine's index only when the row is counted, through its row
//!   group's map, so no pass rewrites the rows.
//!
//! An event further from its folder (a Firehose record that spanned days) never fails the rollup: it
//! is reported with its file ([`Misplaced`]) and counted on its own day when that day is in the range.
//! One of a day still to come simply waits for it; one of a day already finished is kept aside, and
//! that day is counted again from its folders with it ([`RollupEngine::recount`]).
//!
//! Request ids are compared by their 128-bit XXH3 hash: two different ids in one day share a hash with
//! probability about n²/2¹²⁹, below 10⁻²¹ for a billion events a day.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use chrono::NaiveDate;
use meter_model::counting::{is_billable, is_failed};
use meter_model::{Day, Tally};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use rayon::slice::ParallelSliceMut;
use rustc_hash::{FxHashMap, FxHashSet};
use xxhash_rust::xxh3::xxh3_128;

use crate::format::{column, partition};

/// Shards per day; a power of two, several per core so that uneven shards still balance.
const SHARDS: usize = 16;
const SHARD_SHIFT: u32 = 64 - SHARDS.trailing_zeros();
/// Rows per decoded Arrow batch.
const BATCH_ROWS: usize = 64 * 1024;
const CLASS_BILLABLE: u8 = 1;
const CLASS_FAILED: u8 = 2;

/// One row of a rollup: a key's counts on a UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// The key id as the archive holds it (which may not be a valid or known key).
    pub key_id: String,
    /// The UTC day of the events.
    pub day: Day,
    /// Distinct events of that key and day, counted by the rules of CONTRACTS.md §4.
    pub tally: Tally,
}

/// What a rollup read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupStats {
    /// Archive files read.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Rows read whose day is in the range (duplicates included).
    pub rows: u64,
    /// Distinct requests counted.
    pub distinct: u64,
    /// Rows skipped as repeats of a request already counted.
    pub duplicates: u64,
    /// Events more than a day from their folder's day (counted on their own day when it is in the
    /// range; see [`Misplaced`]).
    pub misplaced: u64,
}

impl RollupStats {
    fn add(&mut self, other: Self) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.rows += other.rows;
        self.distinct += other.distinct;
        self.duplicates += other.duplicates;
        self.misplaced += other.misplaced;
    }
}

/// Why a rollup could not be computed. Nothing is written when one of these comes back.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    /// The file is not Parquet, or is truncated or corrupt.
    #[error("{file}: cannot read it as Parquet")]
    Unreadable {
        /// Where the file is.
        file: String,
        /// The reader's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The file does not follow the archive's schema (CONTRACTS.md §5).
    #[error("{file}: {problem}")]
    Schema {
        /// Where the file is.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// A folder holds more events than a local rollup can count in the memory it may use.
    #[error(
        "the {folder} folder holds {events} events: a local rollup needs about {need_mib} MiB, more than the \
         {memory_mib} MiB it may use; compute the rollup with Athena (METER_ROLLUP_ENGINE=athena, or \
         \"rollupEngine\": \"athena\" in infra/environments.json), or give it more memory"
    )]
    TooLarge {
        /// The folder's day.
        folder: Day,
        /// Its events, as its files' footers say.
        events: u64,
        /// What counting them would take.
        need_mib: u64,
        /// What may be used.
        memory_mib: u64,
    },
    /// Listing or fetching the archive failed.
    #[error("cannot read the archive: {context}")]
    Source {
        /// What was being read.
        context: String,
        /// The adapter's error.
        #[source]
        source: meter_model::StoreError,
    },
}

/// A file holding events more than a day from its folder's day: the archive's layout puts events in
/// their own day's folder or a neighbouring one, so such a file is worth a look (a Firehose record that
/// spanned days, a file copied into the wrong folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    /// Where the file is.
    pub file: String,
    /// Its events more than a day from the folder's day.
    pub events: u64,
    /// The earliest and latest UTC day of those events.
    pub days: (Day, Day),
}

/// A file of the archive, fetched.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    /// Where it is, for messages.
    pub name: String,
    /// Its bytes.
    pub bytes: Bytes,
}

/// One deduplicated request in 20 bytes, so that a day of rows stays small: the request id's 128-bit
/// hash, and the key's index in its row group (30 bits) with the class (2 bits) in one word. Packed to
/// 4-byte alignment: 24 bytes otherwise, a sixth more memory for every row in flight.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Row {
    hash_lo: u64,
    hash_hi: u64,
    key_class: u32,
}

/// Key indices fit in the low 30 bits of a row's `key_class`.
const KEY_MASK: u32 = (1 << 30) - 1;

impl Row {
    fn new(hash_lo: u64, hash_hi: u64, key: u32, class: u8) -> Self {
        Self { hash_lo, hash_hi, key_class: (key & KEY_MASK) | (u32::from(class) << 30) }
    }

    fn key(self) -> u32 {
        self.key_class & KEY_MASK
    }

    fn class(self) -> u8 {
        // The top two bits: fits a u8.
        (self.key_class >> 30) as u8
    }
}

/// Rows of one piece in one shard of a day, with the piece's map from its key indices to the
/// engine's: a row's key is translated when it is counted, never rewritten in place (a pass over every
/// row that would hold up the counting of the day).
#[derive(Debug)]
struct Chunk {
    rows: Vec<Row>,
    keys: Arc<[u32]>,
}

type Shards = [Vec<Chunk>; SHARDS];

/// A day whose shards are being counted on the pool, a job each.
#[derive(Debug, Default)]
struct Counting {
    shards_left: usize,
    counts: FxHashMap<u32, Tally>,
    stats: RollupStats,
}

/// What a shard's job sends: the day, and the shard's tally per key (the engine's indices).
type ShardCounted = (i32, Result<(FxHashMap<u32, Tally>, RollupStats), RollupError>);

/// Rows of one piece of a file (a row group), split by event day and shard; keys are local indices.
#[derive(Debug, Default)]
struct Piece {
    keys: Vec<String>,
    days: Vec<(i32, [Vec<Row>; SHARDS])>,
    /// Rows expected per shard of the folder's own day (a row group's rows over the shards).
    expected_per_shard: usize,
    /// Events of this piece more than a day from its folder, and their earliest and latest day.
    misplaced: u64,
    misplaced_days: Option<(i32, i32)>,
}

impl Piece {
    fn note_misplaced(&mut self, day: i32) {
        self.misplaced += 1;
        self.misplaced_days = Some(match self.misplaced_days {
            Some((first, last)) => (first.min(day), last.max(day)),
            None => (day, day),
        });
    }
}

/// A folder whose row groups are decoding on the pool, a job each.
#[derive(Debug)]
struct Decoding {
    folder_day: i32,
    /// The files' names and total size: the bytes themselves go with the jobs, each file's freed as
    /// soon as its row groups are decoded.
    names: Vec<String>,
    bytes: u64,
    /// The jobs started, and where each sends its row group.
    jobs: usize,
    result: mpsc::Receiver<Decoded>,
}

/// What a row group's job sends: its place in file and row-group order, and the row group's rows
/// with the index of its file.
type Decoded = (usize, Result<(usize, Piece), RollupError>);

/// Puts rollup rows in the rollup's order: by day, then key. A key has one row a day, so no two rows
/// compare equal and an unstable (parallel) sort gives the one order.
pub(crate) fn sort_by_day_and_key(rows: &mut [RollupRow]) {
    rows.par_sort_unstable_by(|a, b| a.day.cmp(&b.day).then_with(|| a.key_id.cmp(&b.key_id)));
}

/// Days since 1970-01-01 of `day`.
fn epoch_day(day: Day) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    // Dates chrono can hold are within ±262,143 years: the day count fits an i32.
    i32::try_from((day.date() - epoch).num_days()).unwrap_or(i32::MAX)
}

fn day_of_epoch(days: i32) -> Day {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    Day::from_date(epoch + chrono::Duration::days(i64::from(days)))
}

/// Computes rollups for the days `from..=to`, a folder at a time. Feed it every folder from the day
/// before `from` to the day after `to`, in order, with [`RollupEngine::add_folder`].
#[derive(Debug)]
pub struct RollupEngine {
    from: i32,
    to: i32,
    key_index: FxHashMap<String, u32>,
    key_names: Vec<String>,
    pending: BTreeMap<i32, Shards>,
    /// Days before this one have been finished and returned.
    finished_before: i32,
    /// Rows found for days already finished, to be counted again with them ([`Self::recount`]).
    late: Vec<Piece>,
    /// The last folder added, decoding on the pool.
    decoding: Option<Decoding>,
    /// Complete days being counted on the pool, and where their shards' counts arrive.
    counting: BTreeMap<i32, Counting>,
    counted_sender: mpsc::Sender<ShardCounted>,
    counted: mpsc::Receiver<ShardCounted>,
    /// More distinct key ids than a u32 holds.
    too_many_keys: bool,
    misplaced: Vec<Misplaced>,
    last_folder: Option<i32>,
    stats: RollupStats,
}

/// The memory a rollup may take, and what it takes per event: a folder whose files' footers say it
/// holds more events than fit is refused before it is fetched ([`RollupError::TooLarge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupBudget {
    /// The memory this process may use, in MiB.
    pub memory_mib: u64,
    /// What the rollup holds per event of a day (measured).
    pub bytes_per_event: u64,
    /// What it holds besides the events, in MiB.
    pub base_mib: u64,
}

impl RollupBudget {
    /// The memory a folder of `events` takes, in MiB.
    #[must_use]
    pub fn need_mib(&self, events: u64) -> u64 {
        self.base_mib + events.saturating_mul(self.bytes_per_event).div_ceil(1 << 20)
    }
}

impl RollupEngine {
    /// An engine for the days `from..=to`.
    #[must_use]
    pub fn new(from: Day, to: Day) -> Self {
        let (counted_sender, counted) = mpsc::channel();
        Self {
            from: epoch_day(from),
            to: epoch_day(to),
            key_index: FxHashMap::default(),
            key_names: Vec::new(),
            pending: BTreeMap::new(),
            finished_before: i32::MIN,
            late: Vec::new(),
            decoding: None,
            counting: BTreeMap::new(),
            counted_sender,
            counted,
            too_many_keys: false,
            misplaced: Vec::new(),
            last_folder: None,
            stats: RollupStats::default(),
        }
    }

    /// The folders to read, in order: the range and one day either side.
    #[must_use]
    pub fn folders(from: Day, to: Day) -> Vec<Day> {
        (epoch_day(from) - 1..=epoch_day(to) + 1).map(day_of_epoch).collect()
    }

    /// Starts decoding a day folder's files on the pool, then takes in the folder before it (whose
    /// decode has been running meanwhile) and returns the rollup rows of the days counted so far (each
    /// day's sorted by key). Folders must come in day order; call [`Self::settle`] after the last one.
    ///
    /// A folder's decode is queued before the previous one is waited for, so no core waits at a
    /// folder's end for its slowest file: the next folder's row groups are there to take. The rows of
    /// a complete day come back from a later call (or [`Self::finish`]), once its count has ended.
    pub fn add_folder(
        &mut self,
        folder: Day,
        files: Vec<ArchiveFile>,
    ) -> Result<Vec<RollupRow>, RollupError> {
        let folder_day = epoch_day(folder);
        if let Some(last) = self.last_folder {
            debug_assert!(folder_day > last, "folders must come in order");
        }
        self.last_folder = Some(folder_day);
        let decoding = start_decoding(folder_day, files, self.from, self.to)?;
        match self.decoding.replace(decoding) {
            Some(previous) => self.absorb(previous),
            None => Ok(Vec::new()),
        }
    }

    /// Takes in the last folder added: call after the last one, before [`Self::misplaced`],
    /// [`Self::days_to_recount`] or [`Self::finish`]. Returns the rows of the days counted so far.
    pub fn settle(&mut self) -> Result<Vec<RollupRow>, RollupError> {
        match self.decoding.take() {
            Some(last) => self.absorb(last),
            None => Ok(Vec::new()),
        }
    }

    /// Waits for a folder's decode, merges its rows, and starts counting the days it completes: with
    /// folder `f` in, every day before `f` is complete (its events sit in its own folder or a
    /// neighbour's, short of events far from their folder, which wait for a recount). Returns the rows
    /// of the days whose count has ended.
    fn absorb(&mut self, decoded: Decoding) -> Result<Vec<RollupRow>, RollupError> {
        let mut pieces: Vec<Option<(usize, Piece)>> = (0..decoded.jobs).map(|_| None).collect();
        for _ in 0..decoded.jobs {
            let (place, piece) = decoded.result.recv().map_err(|_| RollupError::Schema {
                file: partition(day_of_epoch(decoded.folder_day)),
                problem: "the folder's decode stopped without an answer".into(),
            })?;
            pieces[place] = Some(piece?);
        }
        // In file and row-group order, so the first copy of a request is always the same one.
        let pieces: Vec<(usize, Piece)> = pieces.into_iter().flatten().collect();
        self.stats.files += decoded.names.len() as u64;
        self.stats.bytes += decoded.bytes;
        self.note_misplaced(&decoded.names, &pieces);
        self.merge(pieces.into_iter().map(|(_, piece)| piece));
        if self.too_many_keys {
            return Err(RollupError::Schema {
                file: partition(day_of_epoch(decoded.folder_day)),
                problem: "the range holds more than 2^32 - 1 distinct key ids; roll up fewer days at once"
                    .into(),
            });
        }
        let complete = self.take_days_before(decoded.folder_day);
        self.count_on_pool(complete);
        self.take_counted(false)
    }

    /// Counts complete days on the pool, a job per shard: the caller goes on feeding folders, and the
    /// jobs queue behind the decodes already there. No job waits for another (as a parallel iterator's
    /// would, on whatever it took meanwhile), so a day's count never waits for a decode to end.
    fn count_on_pool(&mut self, days: Vec<(i32, Shards)>) {
        for (day, shards) in days {
            let counting = self.counting.entry(day).or_default();
            for chunks in shards.into_iter().filter(|chunks| !chunks.is_empty()) {
                counting.shards_left += 1;
                let sender = self.counted_sender.clone();
                rayon::spawn(move || {
                    let counted = std::panic::catch_unwind(AssertUnwindSafe(|| count_shard(&chunks)))
                        .map_err(|_| RollupError::Schema {
                            file: partition(day_of_epoch(day)),
                            problem: "counting the requests of this day failed".into(),
                        });
                    drop(chunks);
                    // The engine may be gone (an earlier folder failed): nobody is left to tell.
                    let _ = sender.send((day, counted));
                });
            }
        }
    }

    /// The rows of the days counted so far; with `all`, waits for every day being counted.
    fn take_counted(&mut self, all: bool) -> Result<Vec<RollupRow>, RollupError> {
        let mut done = Vec::new();
        loop {
            // Days whose shards have all been counted, in day order.
            while let Some(entry) = self.counting.first_entry().filter(|e| e.get().shards_left == 0) {
                let (day, counting) = entry.remove_entry();
                done.push((day, counting.counts, counting.stats));
            }
            if self.counting.is_empty() {
                break;
            }
            let (day, shard) = if all {
                // The engine holds a sender, so the channel is open while any count is still to come.
                let first = self.counting.first_key_value().map_or(0, |(day, _)| *day);
                self.counted.recv().map_err(|_| RollupError::Schema {
                    file: partition(day_of_epoch(first)),
                    problem: "the day's count stopped without an answer".into(),
                })?
            } else if let Ok(counted) = self.counted.try_recv() {
                counted
            } else {
                break;
            };
            let (counts, stats) = shard?;
            let Some(counting) = self.counting.get_mut(&day) else { continue };
            counting.shards_left -= 1;
            counting.stats.add(stats);
            if counting.counts.len() < counts.len() {
                let smaller = std::mem::replace(&mut counting.counts, counts);
                add_counts(&mut counting.counts, smaller);
            } else {
                add_counts(&mut counting.counts, counts);
            }
        }
        Ok(self.rows_of(done))
    }

    /// Finishes every remaining day; call after the last folder.
    pub fn finish(mut self) -> Result<(Vec<RollupRow>, RollupStats), RollupError> {
        let mut rows = self.settle()?;
        let complete = self.take_days_before(i32::MAX);
        self.count_on_pool(complete);
        rows.extend(self.take_counted(true)?);
        Ok((rows, self.stats))
    }

    /// What has been read so far.
    #[must_use]
    pub fn stats(&self) -> RollupStats {
        self.stats
    }

    /// The files that held events more than a day from their folder's day, in the order read.
    #[must_use]
    pub fn misplaced(&self) -> &[Misplaced] {
        &self.misplaced
    }

    /// The days already finished for which events turned up later, in a folder further than a day
    /// away; each must be counted again with [`Self::recount`].
    #[must_use]
    pub fn days_to_recount(&self) -> Vec<Day> {
        let days: std::collections::BTreeSet<i32> =
            self.late.iter().flat_map(|piece| piece.days.iter().map(|(day, _)| *day)).collect();
        days.into_iter().map(day_of_epoch).collect()
    }

    /// An engine that counts `day` again: it holds the rows of `day` that this engine found too late,
    /// and is then fed the folders of `day - 1 ..= day + 1` like any other.
    #[must_use]
    pub fn recount(&self, day: Day) -> Self {
        let mut engine = Self::new(day, day);
        let day = epoch_day(day);
        let late = self.late.iter().filter_map(|piece| {
            let days: Vec<_> = piece.days.iter().filter(|(d, _)| *d == day).cloned().collect();
            (!days.is_empty()).then(|| Piece { keys: piece.keys.clone(), days, ..Piece::default() })
        });
        engine.merge(late);
        engine
    }

    fn note_misplaced(&mut self, names: &[String], pieces: &[(usize, Piece)]) {
        for (file, piece) in pieces {
            let Some((first, last)) = piece.misplaced_days else { continue };
            self.stats.misplaced += piece.misplaced;
            match self.misplaced.last_mut() {
                Some(known) if known.file == names[*file] => {
                    known.events += piece.misplaced;
                    known.days =
                        (known.days.0.min(day_of_epoch(first)), known.days.1.max(day_of_epoch(last)));
                }
                _ => self.misplaced.push(Misplaced {
                    file: names[*file].clone(),
                    events: piece.misplaced,
                    days: (day_of_epoch(first), day_of_epoch(last)),
                }),
            }
        }
    }

    fn merge(&mut self, pieces: impl IntoIterator<Item = Piece>) {
        // Pieces come in file and row-group order, so the first copy of a request is always the same one.
        for mut piece in pieces {
            // Rows of days already finished wait for a recount, with their keys' names.
            let (late, days): (Vec<_>, Vec<_>) =
                piece.days.drain(..).partition(|(day, _)| *day < self.finished_before);
            if !late.is_empty() {
                self.late.push(Piece { keys: piece.keys.clone(), days: late, ..Piece::default() });
            }
            let keys: Arc<[u32]> = piece.keys.drain(..).map(|name| self.intern(name)).collect();
            for (day, shards) in days {
                self.stats.rows += shards.iter().map(|s| s.len() as u64).sum::<u64>();
                let target = self.pending.entry(day).or_insert_with(|| std::array::from_fn(|_| Vec::new()));
                for (shard, rows) in shards.into_iter().enumerate() {
                    if !rows.is_empty() {
                        target[shard].push(Chunk { rows, keys: Arc::clone(&keys) });
                    }
                }
            }
        }
    }

    fn intern(&mut self, name: String) -> u32 {
        if let Some(&index) = self.key_index.get(&name) {
            return index;
        }
        let index = u32::try_from(self.key_names.len()).unwrap_or(u32::MAX);
        // Past u32::MAX keys the rollup stops with an error (absorb).
        self.too_many_keys |= index == u32::MAX;
        self.key_names.push(name.clone());
        self.key_index.insert(name, index);
        index
    }

    /// Takes the pending days before `before` out, to be counted: no row can join them any more.
    fn take_days_before(&mut self, before: i32) -> Vec<(i32, Shards)> {
        self.finished_before = self.finished_before.max(before);
        let mut taken = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= before {
                break;
            }
            taken.push(entry.remove_entry());
        }
        taken
    }

    /// The rollup rows of counted days, each day's sorted by key.
    fn rows_of(&mut self, counted: Vec<(i32, FxHashMap<u32, Tally>, RollupStats)>) -> Vec<RollupRow> {
        let mut out = Vec::new();
        for (day, counts, stats) in counted {
            self.stats.add(stats);
            let day = day_of_epoch(day);
            let start = out.len();
            out.extend(counts.into_iter().map(|(key, tally)| RollupRow {
                key_id: self.key_names[key as usize].clone(),
                day,
                tally,
            }));
            out[start..].sort_unstable_by(|a, b| a.key_id.cmp(&b.key_id));
        }
        out
    }
}

/// Starts decoding a folder's files on the pool, a job per row group. The files' metadata (their
/// footers, a small part of each) is read here, to know the row groups.
fn start_decoding(
    folder_day: i32,
    files: Vec<ArchiveFile>,
    from: i32,
    to: i32,
) -> Result<Decoding, RollupError> {
    let names = files.iter().map(|f| f.name.clone()).collect();
    let bytes = files.iter().map(|f| f.bytes.len() as u64).sum();
    let metadata: Vec<ArrowReaderMetadata> = files
        .iter()
        .map(|file| {
            // A decoder that panics on some file is an error naming it, never an abort.
            std::panic::catch_unwind(|| ArrowReaderMetadata::load(&file.bytes, ArrowReaderOptions::new()))
                .unwrap_or_else(|_| {
                    Err(parquet::errors::ParquetError::General("the footer decoder failed".into()))
                })
                .map_err(|source| RollupError::Unreadable { file: file.name.clone(), source })
        })
        .collect::<Result<_, _>>()?;
    let (sender, result) = mpsc::channel();
    let mut jobs = 0;
    for (index, (file, meta)) in files.into_iter().zip(metadata).enumerate() {
        // Shared by the file's row groups only: its bytes are freed as soon as they are decoded.
        let file = Arc::new(file);
        for group in 0..meta.metadata().num_row_groups() {
            let (file, meta, sender, place) = (Arc::clone(&file), meta.clone(), sender.clone(), jobs);
            jobs += 1;
            rayon::spawn(move || {
                let piece = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    decode_row_group(&file, &meta, group, folder_day, from, to)
                }))
                .unwrap_or_else(|_| {
                    Err(RollupError::Schema {
                        file: file.name.clone(),
                        problem: "the Parquet decoder failed on this file".into(),
                    })
                });
                // The engine may be gone (an earlier folder failed): nobody is left to tell.
                let _ = sender.send((place, piece.map(|piece| (index, piece))));
            });
        }
    }
    Ok(Decoding { folder_day, names, bytes, jobs, result })
}

/// Adds one shard's (or day's) counts to another's.
fn add_counts(into: &mut FxHashMap<u32, Tally>, counts: FxHashMap<u32, Tally>) {
    for (key, tally) in counts {
        into.entry(key).or_default().add(tally);
    }
}

/// Counts each request of a day's shard once.
fn count_shard(chunks: &[Chunk]) -> (FxHashMap<u32, Tally>, RollupStats) {
    let total: usize = chunks.iter().map(|chunk| chunk.rows.len()).sum();
    let mut seen: FxHashSet<(u64, u64)> = FxHashSet::with_capacity_and_hasher(total, Default::default());
    let mut counts: FxHashMap<u32, Tally> = FxHashMap::default();
    for chunk in chunks {
        for row in &chunk.rows {
            if !seen.insert((row.hash_lo, row.hash_hi)) {
                continue;
            }
            let class = row.class();
            let tally = counts.entry(chunk.keys[row.key() as usize]).or_default();
            tally.successful_calls += u64::from(class & CLASS_BILLABLE);
            tally.failed_calls += u64::from((class & CLASS_FAILED) >> 1);
            tally.usage_count += 1;
        }
    }
    let distinct = seen.len() as u64;
    (counts, RollupStats { distinct, duplicates: total as u64 - distinct, ..RollupStats::default() })
}

/// The archive columns a rollup reads, located in one file.
struct Columns {
    request_id: usize,
    key_id: usize,
    ts: usize,
    status_code: usize,
    should_count: usize,
}

fn locate_columns(file: &ArchiveFile, meta: &ArrowReaderMetadata) -> Result<Columns, RollupError> {
    let schema = meta.schema();
    let find = |name: &str| {
        schema.index_of(name).map_err(|_| RollupError::Schema {
            file: file.name.clone(),
            problem: format!(
                "has no {name} column; the archive's files need {}",
                column::ALL[..5].join(", ")
            ),
        })
    };
    Ok(Columns {
        request_id: find(column::REQUEST_ID)?,
        key_id: find(column::KEY_ID)?,
        ts: find(column::TS)?,
        status_code: find(column::STATUS_CODE)?,
        should_count: find(column::SHOULD_COUNT)?,
    })
}

fn decode_row_group(
    file: &ArchiveFile,
    meta: &ArrowReaderMetadata,
    group: usize,
    folder_day: i32,
    from: i32,
    to: i32,
) -> Result<Piece, RollupError> {
    let columns = locate_columns(file, meta)?;
    let unreadable = |source| RollupError::Unreadable { file: file.name.clone(), source };
    let mask = ProjectionMask::roots(
        meta.parquet_schema(),
        [columns.request_id, columns.key_id, columns.ts, columns.status_code, columns.should_count],
    );
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file.bytes.clone(), meta.clone())
        .with_projection(mask)
        .with_row_groups(vec![group])
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(unreadable)?;
    // Most of a row group's rows are of its folder's day: that day's shards are sized for them up
    // front, so they do not grow by doubling (each doubling copies the rows and frees a buffer that
    // the allocator keeps).
    let expected = usize::try_from(meta.metadata().row_group(group).num_rows()).unwrap_or(0);
    let mut piece =
        Piece { expected_per_shard: expected / SHARDS + expected / SHARDS / 8, ..Piece::default() };
    let mut local_keys: FxHashMap<Box<str>, u32> = FxHashMap::default();
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(e.into()))?;
        decode_batch(file, &batch, folder_day, from, to, &mut local_keys, &mut piece)?;
    }
    let mut keys = vec![String::new(); local_keys.len()];
    for (name, index) in local_keys {
        keys[index as usize] = name.into_string();
    }
    piece.keys = keys;
    Ok(piece)
}

fn column<'b>(file: &ArchiveFile, batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef, RollupError> {
    batch.column_by_name(name).ok_or_else(|| RollupError::Schema {
        file: file.name.clone(),
        problem: format!("has no {name} column"),
    })
}

fn schema_error(file: &ArchiveFile, problem: String) -> RollupError {
    RollupError::Schema { file: file.name.clone(), problem }
}

/// A string column as UTF-8, whatever its Arrow encoding (plain, large, view, dictionary).
fn strings(file: &ArchiveFile, array: &ArrayRef, name: &str) -> Result<StringArray, RollupError> {
    let plain = if matches!(array.data_type(), DataType::Utf8) {
        array.clone()
    } else {
        arrow_cast::cast(array, &DataType::Utf8).map_err(|e| {
            schema_error(
                file,
                format!("column {name} is {} where a string is expected: {e}", array.data_type()),
            )
        })?
    };
    let strings = plain.as_string::<i32>().clone();
    if strings.null_count() > 0 {
        return Err(schema_error(file, format!("column {name} has nulls; every event needs one")));
    }
    Ok(strings)
}

/// The events' UTC days since the epoch, from any timestamp encoding of CONTRACTS.md §5 (INT96 arrives
/// as nanoseconds; a bare INT64 is taken as milliseconds, the archive's own unit).
fn days_of(file: &ArchiveFile, array: &ArrayRef) -> Result<Vec<i32>, RollupError> {
    if array.null_count() > 0 {
        return Err(schema_error(file, "column ts has nulls; every event needs a time".into()));
    }
    const MS_PER_DAY: i64 = 86_400_000;
    fn to_days(values: &[i64], per_day: i64) -> Vec<i32> {
        // |i64| / units-per-day (≥ 86,400) always fits an i32.
        values.iter().map(|&v| i32::try_from(v.div_euclid(per_day)).unwrap_or(i32::MAX)).collect()
    }
    Ok(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            to_days(array.as_primitive::<TimestampSecondType>().values(), 86_400)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            to_days(array.as_primitive::<TimestampMillisecondType>().values(), MS_PER_DAY)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            to_days(array.as_primitive::<TimestampMicrosecondType>().values(), MS_PER_DAY * 1_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            to_days(array.as_primitive::<TimestampNanosecondType>().values(), MS_PER_DAY * 1_000_000)
        }
        DataType::Int64 => to_days(array.as_primitive::<Int64Type>().values(), MS_PER_DAY),
        other => {
            return Err(schema_error(file, format!("column ts is {other} where a timestamp is expected")));
        }
    })
}

fn status_codes(file: &ArchiveFile, array: &ArrayRef) -> Result<Arc<dyn Array>, RollupError> {
    if array.null_count() > 0 {
        return Err(schema_error(file, "column status_code has nulls; every event needs one".into()));
    }
    if matches!(array.data_type(), DataType::Int32) {
        return Ok(array.clone());
    }
    if !array.data_type().is_integer() {
        return Err(schema_error(
            file,
            format!("column status_code is {} where an integer is expected", array.data_type()),
        ));
    }
    arrow_cast::cast(array, &DataType::Int32)
        .map_err(|e| schema_error(file, format!("column status_code does not fit an int32: {e}")))
}

fn decode_batch(
    file: &ArchiveFile,
    batch: &RecordBatch,
    folder_day: i32,
    from: i32,
    to: i32,
    local_keys: &mut FxHashMap<Box<str>, u32>,
    piece: &mut Piece,
) -> Result<(), RollupError> {
    let request_ids = strings(file, column(file, batch, column::REQUEST_ID)?, column::REQUEST_ID)?;
    let key_ids = strings(file, column(file, batch, column::KEY_ID)?, column::KEY_ID)?;
    let days = days_of(file, column(file, batch, column::TS)?)?;
    let status = status_codes(file, column(file, batch, column::STATUS_CODE)?)?;
    let status = status.as_primitive::<Int32Type>().values();
    let should_count_column = column(file, batch, column::SHOULD_COUNT)?;
    let Some(should_count) = should_count_column.as_any().downcast_ref::<BooleanArray>() else {
        return Err(schema_error(
            file,
            format!("column should_count is {} where a boolean is expected", should_count_column.data_type()),
        ));
    };
    // Cached: most rows of a file are on one day.
    let mut current: Option<(i32, usize)> = None;
    let mut last_key: Option<(&str, u32)> = None;
    for row in 0..batch.num_rows() {
        let day = days[row];
        if (day - folder_day).abs() > 1 {
            piece.note_misplaced(day);
        }
        if day < from || day > to {
            continue;
        }
        let slot = match current {
            Some((d, slot)) if d == day => slot,
            _ => {
                let slot = piece.days.iter().position(|(d, _)| *d == day).unwrap_or_else(|| {
                    let capacity = if day == folder_day { piece.expected_per_shard } else { 0 };
                    piece.days.push((day, std::array::from_fn(|_| Vec::with_capacity(capacity))));
                    piece.days.len() - 1
                });
                current = Some((day, slot));
                slot
            }
        };
        let key_text = key_ids.value(row);
        let key = match last_key {
            Some((text, index)) if text == key_text => index,
            _ => {
                // Looked up borrowed: a key is copied only the first time a piece sees it.
                let index = match local_keys.get(key_text) {
                    Some(&index) => index,
                    None => {
                        let next = u32::try_from(local_keys.len()).unwrap_or(u32::MAX);
                        if next > KEY_MASK {
                            return Err(schema_error(
                                file,
                                "holds more than 2^30 distinct key ids in one row group".into(),
                            ));
                        }
                        local_keys.insert(key_text.into(), next);
                        next
                    }
                };
                last_key = Some((key_text, index));
                index
            }
        };
        // Nulls in should_count mean "not marked": never bill what was not marked (CONTRACTS.md §3).
        let counted = should_count.is_valid(row) && should_count.value(row);
        let code = match u16::try_from(status[row]) {
            Ok(code @ 100..=599) => code,
            _ => {
                return Err(schema_error(
                    file,
                    format!("status_code {} is outside 100–599 (row {row} of a batch)", status[row]),
                ));
            }
        };
        let class = (u8::from(is_billable(code, counted)) * CLASS_BILLABLE)
            | (u8::from(is_failed(code)) * CLASS_FAILED);
        let hash = xxh3_128(request_ids.value(row).as_bytes());
        #[allow(clippy::cast_possible_truncation)] // the two halves of the hash, on purpose
        let (hash_lo, hash_hi) = (hash as u64, (hash >> 64) as u64);
        let shard = (hash_hi >> SHARD_SHIFT) as usize;
        piece.days[slot].1[shard].push(Row::new(hash_lo, hash_hi, key, class));
    }
    Ok(())
}
