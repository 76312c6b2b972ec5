//! Choosing a store from `--store` / `METER_STORE`, and [`AnyStore`], which lets the command line pick
//! one at run time while handlers stay generic.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use meter_model::{
    ApiKeyRecord, ApplyReport, BatchDelta, CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayUsage,
    HashedKey, KeyChange, KeyId, KeyStore, Month, ParkedUsage, ReconcileRun, Revocation, RunLease,
    StoreError, UsageReader, UsageTotals, UsageWriter,
};

use meter_lambda::env::ConfigError;

pub use crate::sdk::load_aws_config;

use crate::dynamodb::{DynamoStore, TableNames};
use crate::sqlite::SqliteStore;

/// Where the embedded store, archive and reports live unless told otherwise (`METER_HOME`).
pub const DEFAULT_HOME: &str = ".meter";

/// Which store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// DynamoDB (or an emulator, via the standard AWS settings such as `AWS_ENDPOINT_URL`).
    DynamoDb(TableNames),
}

impl StoreConfig {
    /// The store named by `METER_STORE` (how the Lambda binaries are configured).
    pub fn from_env() -> Result<Self, StoreConfigError> {
        std::env::var("METER_STORE")
            .map_err(|_| StoreConfigError {
                input: String::new(),
                reason: "METER_STORE is not set (e.g. dynamodb:keys=ApiKeys,counters=UsageCounters)",
            })?
            .parse()
    }

    /// The default: `meter.db` under the meter home.
    #[must_use]
    pub fn default_in(home: &Path) -> Self {
        Self::Sqlite(home.join("meter.db"))
    }
}

/// A `--store` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a store: {reason}. Use sqlite:PATH, dynamodb: (tables ApiKeys and UsageCounters) or \
     dynamodb:keys=TABLE,counters=TABLE"
)]
pub struct StoreConfigError {
    input: String,
    reason: &'static str,
}

impl From<StoreConfigError> for ConfigError {
    fn from(err: StoreConfigError) -> Self {
        Self::Setting { name: "METER_STORE", source: Box::new(err) }
    }
}

impl FromStr for StoreConfig {
    type Err = StoreConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| StoreConfigError { input: input.to_owned(), reason };
        if let Some(path) = input.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(fail("the SQLite path is empty"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        let Some(spec) = input.strip_prefix("dynamodb:") else {
            return Err(fail("unknown kind"));
        };
        let mut tables = TableNames::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| fail("table settings are name=value"))?;
            if !valid_table_name(value) {
                return Err(fail("a DynamoDB table name is 3 to 255 letters, digits, '_', '-' or '.'"));
            }
            match name {
                "keys" => tables.api_keys = value.to_owned(),
                "counters" => tables.usage_counters = value.to_owned(),
                _ => return Err(fail("the table settings are keys= and counters=")),
            }
        }
        Ok(Self::DynamoDb(tables))
    }
}

fn valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::DynamoDb(t) => write!(f, "dynamodb:keys={},counters={}", t.api_keys, t.usage_counters),
        }
    }
}

/// Either store, chosen at run time.
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded store.
    Sqlite(SqliteStore),
    /// DynamoDB.
    DynamoDb(DynamoStore),
}

impl AnyStore {
    /// Opens the configured store. For DynamoDB this loads the standard AWS configuration (region,
    /// credentials, `AWS_ENDPOINT_URL`) once, with timeouts short enough that an unreachable endpoint
    /// is reported in seconds.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Sqlite(path) => SqliteStore::open(path).map(Self::Sqlite),
            StoreConfig::DynamoDb(tables) => {
                let sdk = load_aws_config().await;
                if sdk.region().is_none() {
                    return Err(StoreError::Unavailable {
                        operation: "open".into(),
                        hint: "no AWS region configured; set AWS_REGION".into(),
                        source: None,
                    });
                }
                let client = aws_sdk_dynamodb::Client::new(&sdk);
                Ok(Self::DynamoDb(DynamoStore::new(client, tables.clone())))
            }
        }
    }

    /// Opens the store `METER_STORE` names: how every Lambda function finds its store.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = StoreConfig::from_env()?;
        Self::open(&config).await.map_err(|e| ConfigError::open(format!("the store {config}"), e))
    }

    /// Makes sure the store is ready to use, creating its tables where they are missing. Returns a
    /// line per thing it created.
    pub async fn init(&self) -> Result<Vec<String>, StoreError> {
        match self {
            // Opening already created and migrated the file.
            Self::Sqlite(_) => Ok(Vec::new()),
            Self::DynamoDb(store) => store.ensure_tables().await,
        }
    }
}

/// Forwards a port method to whichever store is inside.
macro_rules! forward {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(store) => store.$method($($arg),*).await,
            AnyStore::DynamoDb(store) => store.$method($($arg),*).await,
        }
    };
}

impl KeyStore for AnyStore {
    async fn insert_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        forward!(self, insert_key(record))
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        forward!(self, get_key(id))
    }

    async fn find_key_by_hash(&self, hashed_key: &HashedKey) -> Result<Option<ApiKeyRecord>, StoreError> {
        forward!(self, find_key_by_hash(hashed_key))
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        forward!(self, list_keys())
    }

    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<Revocation, StoreError> {
        forward!(self, revoke_key(id, at))
    }

    async fn revocation_epoch(&self) -> Result<u64, StoreError> {
        forward!(self, revocation_epoch())
    }

    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<ApiKeyRecord, StoreError> {
        forward!(self, update_key(id, change))
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: &ApiKeyRecord,
        grace_ends_at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        forward!(self, rotate_key(old, new, grace_ends_at))
    }
}

impl UsageReader for AnyStore {
    async fn month_usage(&self, key_id: &KeyId, month: Month) -> Result<Vec<DayUsage>, StoreError> {
        forward!(self, month_usage(key_id, month))
    }

    async fn lifetime_usage(&self, key_id: &KeyId) -> Result<Vec<DayUsage>, StoreError> {
        forward!(self, lifetime_usage(key_id))
    }
}

impl CounterCorrector for AnyStore {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        forward!(self, day_items(from, to))
    }

    async fn day_item(&self, key_id: &KeyId, day: Day) -> Result<Option<DayUsage>, StoreError> {
        forward!(self, day_item(key_id, day))
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        forward!(self, correct_day(correction))
    }

    async fn refresh_key_totals(&self, key_id: &KeyId) -> Result<Option<UsageTotals>, StoreError> {
        forward!(self, refresh_key_totals(key_id))
    }

    async fn parked_usage_until(
        &self,
        from: Day,
        to: Day,
        until: Option<DateTime<Utc>>,
    ) -> Result<ParkedUsage, StoreError> {
        forward!(self, parked_usage_until(from, to, until))
    }

    async fn clear_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        forward!(self, clear_parked(handles))
    }

    async fn refresh_parked_totals(&self) -> Result<meter_model::ParkedRefresh, StoreError> {
        forward!(self, refresh_parked_totals())
    }

    async fn record_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        forward!(self, record_run(run))
    }

    async fn claim_reconcile_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<RunLease>, StoreError> {
        forward!(self, claim_reconcile_lease(holder, now, until))
    }

    async fn release_reconcile_lease(&self, holder: &str) -> Result<(), StoreError> {
        forward!(self, release_reconcile_lease(holder))
    }
}

impl meter_model::QuotaLedger for AnyStore {
    async fn quota_used(&self, customer: &meter_model::Email, month: Month) -> Result<u64, StoreError> {
        forward!(self, quota_used(customer, month))
    }

    async fn set_quota_refusal(
        &self,
        customer: &meter_model::Email,
        month: Month,
        refused: bool,
    ) -> Result<usize, StoreError> {
        forward!(self, set_quota_refusal(customer, month, refused))
    }
}

impl UsageWriter for AnyStore {
    async fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        forward!(self, apply_deliveries(deliveries, applied_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            "sqlite:/tmp/m.db".parse::<StoreConfig>().unwrap(),
            StoreConfig::Sqlite("/tmp/m.db".into())
        );
        assert_eq!("dynamodb:".parse::<StoreConfig>().unwrap(), StoreConfig::DynamoDb(TableNames::default()));
        let custom: StoreConfig = "dynamodb:keys=prod-keys,counters=prod-usage".parse().unwrap();
        assert_eq!(
            custom,
            StoreConfig::DynamoDb(TableNames {
                api_keys: "prod-keys".into(),
                usage_counters: "prod-usage".into()
            })
        );
        assert_eq!(custom.to_string(), "dynamodb:keys=prod-keys,counters=prod-usage");
    }

    #[test]
    fn rejects_the_rest_with_guidance() {
        for bad in ["", "sqlite:", "postgres://x", "dynamodb:keys", "dynamodb:tables=x", "dynamodb:keys=a"] {
            let err = bad.parse::<StoreConfig>().unwrap_err().to_string();
            assert!(err.contains("sqlite:PATH"), "{bad}: {err}");
        }
    }
}
