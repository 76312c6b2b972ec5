//! The archive of usage events, the source of truth (CONTRACTS.md §5, §6): its format, its writer, its
//! reader and the rollup engine. It depends on `meter-model` only; where the bytes live (a local
//! directory, S3) is an [`ObjectSink`]/[`ObjectSource`](meter_model::ObjectSource) adapter from
//! `meter-store`, composed by the caller: `Archive::new(LocalDir::new(root))`.

pub mod format;
pub mod output;
pub mod read;
pub mod rollup;
pub mod sql;

use meter_model::{ArchiveWriter, Day, ObjectSink, RejectedLine, StoreError, UsageEvent};

pub use format::{KEYS_SNAPSHOT, REJECTS_DIR, archive_schema, is_data_file, partition, rollup_folder};
pub use output::{
    EncodeError, RollupWriteError, encode_rollup_file, key_directory_parquet, key_directory_schema,
    rollup_csv, rollup_parquet, rollup_schema, write_rollups,
};
pub use read::{Rollup, rollup, rollup_within};
pub use rollup::{ArchiveFile, Misplaced, RollupBudget, RollupEngine, RollupError, RollupRow, RollupStats};
pub use sql::{ROLLUP_SQL, range_parameters, rollup_on};

/// The archive: the layout of CONTRACTS.md §5 over any [`ObjectSink`]. Files are named by their writers
/// after their content, so writing one again replaces it with the same bytes rather than adding a
/// duplicate.
#[derive(Debug, Clone)]
pub struct Archive<S>(S);

impl<S> Archive<S> {
    /// The archive kept in `objects`.
    pub const fn new(objects: S) -> Self {
        Self(objects)
    }

    /// Where the files are: to list, read, or write files beside the archive (rollups, reports).
    pub const fn objects(&self) -> &S {
        &self.0
    }
}

impl<S: ObjectSink> ArchiveWriter for Archive<S> {
    async fn write_events(
        &self,
        day: Day,
        name: &str,
        events: &[UsageEvent<'_>],
    ) -> Result<String, StoreError> {
        let bytes = format::encode_parquet(events)?;
        self.0
            .put(&format!("{}/{name}.parquet", partition(day)), bytes, "application/vnd.apache.parquet")
            .await
    }

    async fn write_rejects(
        &self,
        day: Day,
        name: &str,
        rejects: &[RejectedLine],
    ) -> Result<String, StoreError> {
        let bytes = format::encode_rejects(rejects)?;
        self.0
            .put(&format!("{REJECTS_DIR}/{}/{name}.jsonl", partition(day)), bytes, "application/x-ndjson")
            .await
    }
}
