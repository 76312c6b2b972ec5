//! Nightly reconciliation: rollups from the Parquet archive and drift correction (DESIGN §3.5, §3.6,
//! §4). Lands with the reconcile issue.
