//! Nightly reconciliation (DESIGN §3.5, §3.6, §4): authoritative rollups from the Parquet archive,
//! and drift correction of the counters that never races the realtime writer.

pub mod rollup;

pub use rollup::{ArchiveFile, RollupEngine, RollupError, RollupRow, RollupStats};
pub mod drift;
pub mod job;
pub mod output;
pub mod read;
pub mod synth;

pub use drift::{
    DriftAction, DriftLine, Orphan, ReconcileError, ReconcileOptions, ReconcileReport, reconcile,
};
pub use read::{Rollup, rollup};
