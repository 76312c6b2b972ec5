//! Reading the archive's day folders through an [`ObjectSource`] (a local directory or S3) and
//! feeding them to the [`RollupEngine`] a folder at a time.

use futures::{StreamExt, TryStreamExt};
use meter_model::Day;
use meter_model::ObjectSource;

use crate::format::{is_data_file, partition};

use crate::rollup::{ArchiveFile, RollupEngine, RollupError, RollupRow, RollupStats};

/// How many files of a folder are fetched at once (S3 latency, not bandwidth, bounds a folder's fetch).
const FETCH_CONCURRENCY: usize = 16;

/// Rollups of the days `from..=to`, sorted by day then key, and what was read to compute them.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    /// One row per key and day with events.
    pub rows: Vec<RollupRow>,
    /// What was read.
    pub stats: RollupStats,
}

/// Reads the day folders `from - 1 ..= to + 1` of the archive and computes the rollups of
/// `from..=to`. `progress` hears of each folder once it has been read.
pub async fn rollup<S: ObjectSource>(
    archive: &S,
    from: Day,
    to: Day,
    mut progress: impl FnMut(Day, RollupStats),
) -> Result<Rollup, RollupError> {
    let mut engine = RollupEngine::new(from, to);
    let mut rows = Vec::new();
    for folder in RollupEngine::folders(from, to) {
        let files = fetch_folder(archive, folder).await?;
        // Decoding is CPU work on rayon's threads; keep the async runtime's threads free meanwhile.
        let (returned, done) = tokio::task::spawn_blocking(move || {
            let done = engine.add_folder(folder, &files);
            (engine, done)
        })
        .await
        .map_err(|e| RollupError::Source {
            context: format!("decoding folder {}", partition(folder)),
            source: meter_model::StoreError::Other { operation: "decode".into(), source: e.into() },
        })?;
        engine = returned;
        rows.extend(done?);
        progress(folder, engine.stats());
    }
    let (rest, stats) = engine.finish()?;
    rows.extend(rest);
    Ok(Rollup { rows, stats })
}

async fn fetch_folder<S: ObjectSource>(archive: &S, folder: Day) -> Result<Vec<ArchiveFile>, RollupError> {
    let relative = partition(folder);
    let names = archive.list(&relative).await.map_err(|source| RollupError::Source {
        context: format!("listing {}", archive.location(&relative)),
        source,
    })?;
    futures::stream::iter(names.into_iter().filter(|name| is_data_file(name)))
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
