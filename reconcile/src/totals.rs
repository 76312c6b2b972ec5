//! The keys' lifetime totals between nightly runs (CONTRACTS.md §2): the writes keep them, a frequent
//! refresh brings the parked usage in, and a recount repairs them after the tables were changed by
//! other means (a restore of one table, an edit by hand).

use futures::{StreamExt, TryStreamExt};
use meter_model::{CounterCorrector, KeyStore, ParkedRefresh};

use crate::drift::ReconcileError;

/// Keys recounted at once.
const RECOUNT_CONCURRENCY: usize = 16;

/// How often the deployed refresh runs (the stack's schedule): with the transformer's minute, parked
/// usage reaches the key totals within 15 minutes of the call.
pub const PARKED_REFRESH_MINUTES: u32 = 10;

/// Brings the parked usage into the keys' totals: every parked item read once.
pub async fn refresh_parked<S: CounterCorrector>(store: &S) -> Result<ParkedRefresh, ReconcileError> {
    store.refresh_parked_totals().await.map_err(|source| ReconcileError::Store {
        during: "refreshing the parked usage in the key totals".into(),
        source,
    })
}

/// What a recount did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recount {
    /// Keys whose totals were set from their days.
    pub keys_recounted: u64,
    /// The parked refresh that followed.
    pub parked: ParkedRefresh,
}

/// Recounts every key's totals from its days, then refreshes the parked usage in them. Reads each
/// key's whole history: a repair for after the tables were changed by other means, not a nightly step.
pub async fn recount_keys<S: CounterCorrector + KeyStore>(store: &S) -> Result<Recount, ReconcileError> {
    let failed = |during: &str| {
        let during = during.to_owned();
        move |source| ReconcileError::Store { during, source }
    };
    let keys = store.list_keys().await.map_err(failed("listing keys"))?;
    let recounted: Vec<_> = futures::stream::iter(keys)
        .map(|key| async move { store.refresh_key_totals(&key.id).await })
        .buffer_unordered(RECOUNT_CONCURRENCY)
        .try_collect()
        .await
        .map_err(failed("recounting key totals"))?;
    let keys_recounted = recounted.iter().flatten().count() as u64;
    Ok(Recount { keys_recounted, parked: refresh_parked(store).await? })
}
