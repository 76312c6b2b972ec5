//! Reading the archive's day folders through an [`ObjectSource`] (a local directory or S3) and
//! feeding them to the [`RollupEngine`] a folder at a time.

use futures::{StreamExt, TryStreamExt};
use meter_model::Day;
use meter_model::ObjectSource;
use parquet::file::FOOTER_SIZE;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};

use crate::format::{is_data_file, partition};

use crate::rollup::{
    ArchiveFile, Misplaced, RollupBudget, RollupEngine, RollupError, RollupRow, RollupStats,
    sort_by_day_and_key,
};

/// How many files of a folder are fetched at once (S3 latency, not bandwidth, bounds a folder's fetch).
const FETCH_CONCURRENCY: usize = 16;

/// Bytes read from a file's end to find its footer: an archive file's metadata (8 columns, a row
/// group or two) is a few kilobytes; a longer one is read again at its size.
const FOOTER_READ: u64 = 8 * 1024;

/// Rollups of the days `from..=to`, sorted by day then key, and what was read to compute them.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    /// One row per key and day with events.
    pub rows: Vec<RollupRow>,
    /// What was read.
    pub stats: RollupStats,
    /// Files holding events more than a day from their folder's day (counted all the same when their
    /// day is in the range).
    pub misplaced: Vec<Misplaced>,
}

/// Reads the day folders `from - 1 ..= to + 1` of the archive and computes the rollups of
/// `from..=to`. `progress` hears of each folder once it has been read.
pub async fn rollup<S: ObjectSource>(
    archive: &S,
    from: Day,
    to: Day,
    progress: impl FnMut(Day, RollupStats),
) -> Result<Rollup, RollupError> {
    rollup_within(archive, from, to, None, progress).await
}

/// [`rollup`], refusing a folder whose events do not fit `budget` ([`RollupError::TooLarge`]) as
/// soon as its files' footers say so, read alone before any file is fetched whole.
pub async fn rollup_within<S: ObjectSource>(
    archive: &S,
    from: Day,
    to: Day,
    budget: Option<RollupBudget>,
    mut progress: impl FnMut(Day, RollupStats),
) -> Result<Rollup, RollupError> {
    let mut engine = RollupEngine::new(from, to);
    let mut rows = Vec::new();
    let folders = RollupEngine::folders(from, to);
    // The next folder is fetched while this one decodes: reading files (I/O, or page-cache copies on
    // this thread) and decoding them (CPU, on rayon's threads) overlap instead of taking turns.
    let mut fetched = match folders.first() {
        Some(&first) => Some(fetch_folder(archive, first, budget).await?),
        None => None,
    };
    for (index, &folder) in folders.iter().enumerate() {
        let files = fetched.take().unwrap_or_default();
        let next = folders.get(index + 1).copied();
        let prefetch = async {
            match next {
                Some(next) => fetch_folder(archive, next, budget).await.map(Some),
                None => Ok(None),
            }
        };
        let (done, prefetched) = tokio::join!(decode_folder(&mut engine, folder, files), prefetch);
        rows.extend(done?);
        fetched = prefetched?;
        progress(folder, engine.stats());
    }
    rows.extend(engine.settle()?);
    let misplaced = engine.misplaced().to_vec();
    // Days that events further than a day from their folder reached only after they were finished
    // are counted again, from their own folders and those events together.
    let mut recounted = Vec::new();
    for day in engine.days_to_recount() {
        let mut again = engine.recount(day);
        let mut day_rows = Vec::new();
        for folder in RollupEngine::folders(day, day) {
            day_rows.extend(add_folder(archive, &mut again, folder, budget).await?);
        }
        day_rows.extend(again.finish()?.0);
        recounted.push((day, day_rows));
    }
    let (rest, stats) = engine.finish()?;
    rows.extend(rest);
    for (day, day_rows) in recounted {
        rows.retain(|row| row.day != day);
        rows.extend(day_rows);
    }
    sort_by_day_and_key(&mut rows);
    Ok(Rollup { rows, stats, misplaced })
}

/// Fetches a folder's files and hands them to `engine`; returns the rows of the days it finished.
async fn add_folder<S: ObjectSource>(
    archive: &S,
    engine: &mut RollupEngine,
    folder: Day,
    budget: Option<RollupBudget>,
) -> Result<Vec<RollupRow>, RollupError> {
    let files = fetch_folder(archive, folder, budget).await?;
    decode_folder(engine, folder, files).await
}

/// Hands a folder's files to `engine`; returns the rows of the days it finished.
async fn decode_folder(
    engine: &mut RollupEngine,
    folder: Day,
    files: Vec<ArchiveFile>,
) -> Result<Vec<RollupRow>, RollupError> {
    // Decoding is CPU work on rayon's threads; keep the async runtime's threads free meanwhile.
    let mut taken = std::mem::replace(engine, RollupEngine::new(folder, folder));
    let (returned, done) = tokio::task::spawn_blocking(move || {
        let done = taken.add_folder(folder, files);
        (taken, done)
    })
    .await
    .map_err(|e| RollupError::Source {
        context: format!("decoding folder {}", partition(folder)),
        source: meter_model::StoreError::Other { operation: "decode".into(), source: e.into() },
    })?;
    *engine = returned;
    done
}

/// Fetches a folder's data files; with a `budget`, first reads their footers alone and refuses a
/// folder whose events do not fit ([`RollupError::TooLarge`]) before any file is fetched whole.
async fn fetch_folder<S: ObjectSource>(
    archive: &S,
    folder: Day,
    budget: Option<RollupBudget>,
) -> Result<Vec<ArchiveFile>, RollupError> {
    let relative = partition(folder);
    let names = archive.list(&relative).await.map_err(|source| RollupError::Source {
        context: format!("listing {}", archive.location(&relative)),
        source,
    })?;
    let names: Vec<String> = names.into_iter().filter(|name| is_data_file(name)).collect();
    if let Some(budget) = budget {
        // Owned names: the futures of a `Send` caller must not borrow from their closure's argument.
        let events: u64 = futures::stream::iter(names.clone())
            .map(|name| async move { footer_rows(archive, &name).await })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_fold(0u64, |sum, rows| async move { Ok(sum + rows) })
            .await?;
        let need_mib = budget.need_mib(events);
        if need_mib > budget.memory_mib {
            return Err(RollupError::TooLarge { folder, events, need_mib, memory_mib: budget.memory_mib });
        }
    }
    futures::stream::iter(names)
        .map(|name| async move {
            let location = archive.location(&name);
            archive
                .get(&name)
                .await
                .map(|bytes| ArchiveFile { name: location.clone(), bytes })
                .map_err(|source| RollupError::Source { context: format!("fetching {location}"), source })
        })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

/// The rows a file's footer says it holds, read from its end alone. A file whose footer cannot be
/// read counts none here: decoding it reports it, naming the file.
async fn footer_rows<S: ObjectSource>(archive: &S, name: &str) -> Result<u64, RollupError> {
    let tail = |len| async move {
        archive.get_tail(name, len).await.map_err(|source| RollupError::Source {
            context: format!("reading the footer of {}", archive.location(name)),
            source,
        })
    };
    let mut bytes = tail(FOOTER_READ).await?;
    let Some(footer) =
        bytes.len().checked_sub(FOOTER_SIZE).and_then(|at| <&[u8; FOOTER_SIZE]>::try_from(&bytes[at..]).ok())
    else {
        return Ok(0);
    };
    let Ok(footer) = FooterTail::try_new(footer) else { return Ok(0) };
    let needed = footer.metadata_length() + FOOTER_SIZE;
    if bytes.len() < needed && bytes.len() as u64 == FOOTER_READ {
        bytes = tail(needed as u64).await?;
    }
    let Some(start) = bytes.len().checked_sub(needed) else { return Ok(0) };
    Ok(ParquetMetaDataReader::decode_metadata(&bytes[start..bytes.len() - FOOTER_SIZE])
        .map_or(0, |metadata| u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0)))
}
