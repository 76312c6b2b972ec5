//! The DynamoDB store: the `ApiKeys` and `UsageCounters` tables of CONTRACTS.md §2, one concern a
//! module: [`schema`] creates the tables, `error` translates every SDK error into a
//! [`StoreError`](meter_model::StoreError) (nothing outside this module sees an SDK type), `item`
//! converts items, `keys` is the [`KeyStore`](meter_model::KeyStore), `counters` reads and corrects the
//! day items, and `batch` applies the realtime path's buffers of deliveries, each delivery once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use meter_model::KeyId;

use meter_lambda::RetryPolicy;

mod batch;
mod counters;
mod error;
pub mod export;
mod item;
mod keys;
mod open;
mod parked;
mod quota;
pub mod schema;

use item::s;

/// The GSI on `ApiKeys.hashedKey`, for keys whose id cannot be read from the key itself.
pub const HASHED_KEY_INDEX: &str = "hashedKey-index";
/// The TTL attribute of bookkeeping items in `UsageCounters` (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expiresAt";

/// Partition of the bookkeeping item that holds the revocation epoch. `#` cannot start a key id.
const META_PARTITION: &str = "#meta";
const EPOCH_SORT_KEY: &str = "revocationEpoch";

/// The names of the two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// `ApiKeys`.
    pub api_keys: String,
    /// `UsageCounters`.
    pub usage_counters: String,
}

impl Default for TableNames {
    fn default() -> Self {
        Self { api_keys: "ApiKeys".into(), usage_counters: "UsageCounters".into() }
    }
}

/// Partition prefix of the delivery marker sets in `UsageCounters`; `#` cannot start a key id.
const MARKER_PARTITION_PREFIX: &str = "#delivered#";
/// Partition of the reconcile run records in `UsageCounters`.
const RECONCILE_PARTITION: &str = "#reconcile";
/// Partition and sort key of the reconcile lease (one run at a time).
const LEASE_PARTITION: &str = "#lease";
const RECONCILE_LEASE: &str = "reconcile";
/// How long run records are kept.
const RUN_RECORD_TTL_DAYS: i64 = 400;
/// DynamoDB's limit on the keys of one `BatchGetItem`.
const MAX_BATCH_GET_KEYS: usize = 100;
/// How the keys DynamoDB leaves unprocessed in a `BatchGetItem` (throttling) are asked for again.
const UNPROCESSED_RETRY: RetryPolicy =
    RetryPolicy::new(9, Duration::from_millis(25), Duration::from_millis(3200));
/// Waits before asking DynamoDB again for what it left unprocessed (throttling); fails, as a call that
/// may succeed later, once `pauses` are spent.
async fn pause_for_unprocessed(
    pauses: &mut impl Iterator<Item = Duration>,
    operation: &str,
) -> Result<(), meter_model::StoreError> {
    let Some(pause) = pauses.next() else {
        return Err(meter_model::StoreError::Retryable {
            operation: operation.into(),
            source: "DynamoDB left requests unprocessed after every retry".into(),
        });
    };
    tokio::time::sleep(pause).await;
    Ok(())
}

/// At most this many marker and counter writes in flight.
const COUNTER_WRITE_CONCURRENCY: usize = 32;

/// The DynamoDB store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    /// The same client with the SDK's retries off, for the writes that are not idempotent (an `ADD`):
    /// a resent request whose first attempt landed would add twice or find its own marks. Those writes
    /// are resent by the adapter, and only when DynamoDB refused them unapplied.
    single_shot: Client,
    tables: TableNames,
    write_limit: Option<usize>,
    /// Keys seen to exist: keys are never deleted, so a warm function reads each key once.
    /// Keys known to exist, with what their look-up said of their quota (kept for the instance's life:
    /// a changed quota reaches a warm transformer when it starts again).
    known_keys: Arc<Mutex<HashMap<KeyId, Option<Arc<meter_model::ledger::CustomerQuota>>>>>,
}

impl DynamoStore {
    /// A store over an already configured client.
    #[must_use]
    pub fn new(client: Client, tables: TableNames) -> Self {
        let retry_off = aws_sdk_dynamodb::config::retry::RetryConfig::disabled();
        let single_shot = Client::from_conf(client.config().to_builder().retry_config(retry_off).build());
        Self { client, single_shot, tables, write_limit: None, known_keys: Arc::default() }
    }

    /// A fault drill: each `apply_deliveries` call marks its deliveries but writes at most `limit`
    /// day items, as a function that crashed midway would. What is left is reported as not applied,
    /// and reconcile heals it.
    #[must_use]
    pub fn with_write_limit(mut self, limit: usize) -> Self {
        self.write_limit = Some(limit);
        self
    }

    /// The tables this store uses.
    #[must_use]
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    fn key_of(id: &KeyId) -> HashMap<String, AttributeValue> {
        HashMap::from([("id".to_owned(), s(id.as_str()))])
    }

    fn epoch_key() -> HashMap<String, AttributeValue> {
        HashMap::from([("keyId".to_owned(), s(META_PARTITION)), ("day".to_owned(), s(EPOCH_SORT_KEY))])
    }
}
