//! Nightly reconciliation (CONTRACTS.md §6): drift correction of the counters from the archive's
//! rollups (computed by `meter-archive`), never racing the realtime writer.

pub mod drift;
pub mod engine;
pub mod job;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod totals;

pub use drift::{
    DriftAction, DriftLine, Orphan, ReconcileError, ReconcileOptions, ReconcileReport, reconcile,
    reconcile_with,
};
pub use engine::RollupEngine;
pub use totals::{PARKED_REFRESH_MINUTES, Recount, recount_keys, refresh_parked};
