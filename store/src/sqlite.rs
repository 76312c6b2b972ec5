//! The embedded store: one SQLite file, created on first use, schema-versioned with
//! `PRAGMA user_version`, every write in a transaction.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use meter_model::batch::{
    MARKER_TTL, MarkerSlot, buffer_digest, capacity, merge_days, split_parked, with_parked,
};
use meter_model::time::{format_instant, parse_instant};
use meter_model::{
    ApiKeyRecord, ApplyReport, BatchDelta, CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayDelta,
    DayUsage, Email, HashedKey, KeyChange, KeyId, KeyStatus, KeyStore, Month, ParkedUsage, PlanName,
    ReconcileRun, Revocation, StoreError, Tally, UsageReader, UsageTotals, UsageWriter,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

/// Schema migrations, applied in order; `user_version` records how many have run. Never edit one that
/// has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY NOT NULL,
    hashed_key       TEXT NOT NULL,
    user_email       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    plan             TEXT,
    name             TEXT,
    created_at       TEXT NOT NULL,
    revoked_at       TEXT,
    last_used        TEXT,
    usage_count      INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    successful_calls INTEGER NOT NULL DEFAULT 0 CHECK (successful_calls >= 0),
    failed_calls     INTEGER NOT NULL DEFAULT 0 CHECK (failed_calls >= 0)
);
CREATE INDEX api_keys_hashed_key ON api_keys (hashed_key);
CREATE TABLE usage_counters (
    key_id           TEXT NOT NULL,
    day              TEXT NOT NULL,
    successful_calls INTEGER NOT NULL DEFAULT 0 CHECK (successful_calls >= 0),
    failed_calls     INTEGER NOT NULL DEFAULT 0 CHECK (failed_calls >= 0),
    usage_count      INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    last_used        TEXT,
    reconciled_at    TEXT,
    PRIMARY KEY (key_id, day)
) WITHOUT ROWID;
CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
",
    r"
CREATE TABLE applied_batches (
    batch_id   TEXT PRIMARY KEY NOT NULL,
    applied_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX applied_batches_expiry ON applied_batches (expires_at);
",
    r"
CREATE TABLE reconcile_runs (
    run_id     TEXT PRIMARY KEY NOT NULL,
    started_at TEXT NOT NULL,
    record     TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX usage_counters_day ON usage_counters (day);
",
    // Deliveries are marked in slots (a minute of their first log event and a shard of their stream), as
    // the DynamoDB store marks them in sets: keyed by slot first, marks are appended in time order
    // rather than scattered over the table, and a slot's size tells what its set's write would cost.
    r"
CREATE TABLE delivery_marks (
    slot       TEXT NOT NULL,
    digest     INTEGER NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (slot, digest)
) WITHOUT ROWID;
CREATE INDEX delivery_marks_expiry ON delivery_marks (expires_at);
",
    // Usage parked by the realtime path (a key's day with a single call in a buffer): readers add it
    // in, reconcile clears it once the day items hold the authoritative counts.
    r"
CREATE TABLE parked_usage (
    id               INTEGER PRIMARY KEY,
    item             TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    day              TEXT NOT NULL,
    successful_calls INTEGER NOT NULL,
    failed_calls     INTEGER NOT NULL,
    usage_count      INTEGER NOT NULL,
    last_used        TEXT NOT NULL
);
CREATE INDEX parked_usage_key ON parked_usage (key_id, day);
CREATE INDEX parked_usage_day ON parked_usage (day);
CREATE INDEX parked_usage_item ON parked_usage (item);
",
    // Key lifecycle (`meter keys import|update|rotate`): usage counted before meter, the end of a
    // rotation's grace period, and the earlier terms (JSON) a month is billed under.
    r"
ALTER TABLE api_keys ADD COLUMN imported_usage_count INTEGER NOT NULL DEFAULT 0 CHECK (imported_usage_count >= 0);
ALTER TABLE api_keys ADD COLUMN imported_successful_calls INTEGER NOT NULL DEFAULT 0 CHECK (imported_successful_calls >= 0);
ALTER TABLE api_keys ADD COLUMN imported_failed_calls INTEGER NOT NULL DEFAULT 0 CHECK (imported_failed_calls >= 0);
ALTER TABLE api_keys ADD COLUMN imported_last_used TEXT;
ALTER TABLE api_keys ADD COLUMN grace_ends_at TEXT;
ALTER TABLE api_keys ADD COLUMN previous_terms TEXT;
",
];

const REVOCATION_EPOCH: &str = "revocation_epoch";

const KEY_COLUMNS: &str = "id, hashed_key, user_email, status, plan, name, created_at, revoked_at, last_used, \
     usage_count, successful_calls, failed_calls, imported_usage_count, imported_successful_calls, \
     imported_failed_calls, imported_last_used, grace_ends_at, previous_terms";

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Keys seen to exist. Keys are never deleted, so a key once found stays known; the DynamoDB store
    /// keeps the same memory to save reads, and this one mirrors it so that both report the same reads.
    known_keys: Mutex<HashSet<KeyId>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store file at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable {
                operation: "open".into(),
                hint: format!("cannot create the directory {}", parent.display()),
                source: Some(e.into()),
            })?;
        }
        let conn = Connection::open(path).map_err(|e| StoreError::Unavailable {
            operation: "open".into(),
            hint: format!("cannot open the SQLite file {}", path.display()),
            source: Some(e.into()),
        })?;
        Self::prepare(conn, path.to_owned())
    }

    /// A private in-memory store (tests, dry runs).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| sql_error("open", e))?;
        Self::prepare(conn, PathBuf::from(":memory:"))
    }

    /// The file behind the store.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        // WAL lets readers (a `usage show`) run beside a writer; NORMAL sync in WAL mode never corrupts
        // and can lose only the newest commits on power loss, which the batch markers make safe to redo.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| sql_error("open", e))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| sql_error("open", e))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| sql_error("open", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| sql_error("open", e))?;
        migrate(&mut conn, &path)?;
        Ok(Self { conn: Mutex::new(conn), path, known_keys: Mutex::new(HashSet::new()) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the database half-written (every write is a
        // transaction), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error("migrate", e))?;
    let version: i64 =
        tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| sql_error("migrate", e))?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > known {
        return Err(StoreError::Unavailable {
            operation: "open".into(),
            hint: format!(
                "{} has schema version {version}, newer than this meter understands ({known}); upgrade meter",
                path.display()
            ),
            source: None,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql).map_err(|e| sql_error("migrate", e))?;
        tx.pragma_update(None, "user_version", index + 1).map_err(|e| sql_error("migrate", e))?;
    }
    tx.commit().map_err(|e| sql_error("migrate", e))
}

/// The schema version this build writes.
#[must_use]
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

fn sql_error(operation: &str, err: rusqlite::Error) -> StoreError {
    let code = err.sqlite_error_code();
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Retryable { operation: operation.into(), source: err.into() }
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::NotADatabase,
        ) => StoreError::Unavailable {
            operation: operation.into(),
            hint: "the SQLite file cannot be used; check the path given by --store/METER_STORE".into(),
            source: Some(err.into()),
        },
        _ => StoreError::Other { operation: operation.into(), source: err.into() },
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt { detail: format!("{what} = {value} exceeds SQLite's range") })
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

fn instant(text: Option<String>, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    text.map(|t| parse_instant(&t).map_err(|_| corrupt(format!("{column} {t:?} is not a timestamp"))))
        .transpose()
}

fn counter(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is negative")))
}

/// Columns of a key row, read raw so that conversion errors become `Corrupt`, not SQL errors.
struct KeyRow {
    id: String,
    hashed_key: String,
    user_email: String,
    status: String,
    plan: Option<String>,
    name: Option<String>,
    created_at: String,
    revoked_at: Option<String>,
    last_used: Option<String>,
    usage_count: i64,
    successful_calls: i64,
    failed_calls: i64,
    imported_usage_count: i64,
    imported_successful_calls: i64,
    imported_failed_calls: i64,
    imported_last_used: Option<String>,
    grace_ends_at: Option<String>,
    previous_terms: Option<String>,
}

impl KeyRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            hashed_key: row.get(1)?,
            user_email: row.get(2)?,
            status: row.get(3)?,
            plan: row.get(4)?,
            name: row.get(5)?,
            created_at: row.get(6)?,
            revoked_at: row.get(7)?,
            last_used: row.get(8)?,
            usage_count: row.get(9)?,
            successful_calls: row.get(10)?,
            failed_calls: row.get(11)?,
            imported_usage_count: row.get(12)?,
            imported_successful_calls: row.get(13)?,
            imported_failed_calls: row.get(14)?,
            imported_last_used: row.get(15)?,
            grace_ends_at: row.get(16)?,
            previous_terms: row.get(17)?,
        })
    }

    fn into_record(self) -> Result<ApiKeyRecord, StoreError> {
        let id = KeyId::parse(&self.id).map_err(|e| corrupt(e.to_string()))?;
        let context = |e: &dyn std::fmt::Display| corrupt(format!("key {id}: {e}"));
        Ok(ApiKeyRecord {
            hashed_key: HashedKey::parse(&self.hashed_key).map_err(|e| context(&e))?,
            user_email: Email::parse(&self.user_email).map_err(|e| context(&e))?,
            status: KeyStatus::parse(&self.status).map_err(|e| context(&e))?,
            plan: self.plan.as_deref().map(PlanName::parse).transpose().map_err(|e| context(&e))?,
            name: self.name,
            created_at: instant(Some(self.created_at), "createdAt")?.unwrap_or_default(),
            revoked_at: instant(self.revoked_at, "revokedAt")?,
            last_used: instant(self.last_used, "lastUsed")?,
            totals: tally_of(self.successful_calls, self.failed_calls, self.usage_count)?,
            imported: UsageTotals {
                tally: tally_of(
                    self.imported_successful_calls,
                    self.imported_failed_calls,
                    self.imported_usage_count,
                )?,
                last_used: instant(self.imported_last_used, "importedLastUsed")?,
            },
            grace_ends_at: instant(self.grace_ends_at, "graceEndsAt")?,
            previous_terms: match self.previous_terms.as_deref() {
                None | Some("") => Vec::new(),
                Some(json) => serde_json::from_str(json).map_err(|e| context(&e))?,
            },
            id,
        })
    }
}

fn select_key(conn: &Connection, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
    conn.query_row(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [id.as_str()], KeyRow::read)
        .optional()
        .map_err(|e| sql_error("get key", e))?
        .map(KeyRow::into_record)
        .transpose()
}

impl KeyStore for SqliteStore {
    async fn insert_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        insert_new_key(&self.conn(), record, "insert key")
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        select_key(&self.conn(), id)
    }

    async fn find_key_by_hash(&self, hashed_key: &HashedKey) -> Result<Option<ApiKeyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hashed_key = ?1 LIMIT 2"))
            .map_err(|e| sql_error("find key by hash", e))?;
        let rows = stmt
            .query_map([hashed_key.as_str()], KeyRow::read)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| sql_error("find key by hash", e))?;
        match <[KeyRow; 1]>::try_from(rows) {
            Ok([row]) => row.into_record().map(Some),
            Err(rows) if rows.is_empty() => Ok(None),
            Err(_) => Err(corrupt("two keys share one hashedKey")),
        }
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
            .map_err(|e| sql_error("list keys", e))?;
        let rows = stmt
            .query_map([], KeyRow::read)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| sql_error("list keys", e))?;
        rows.into_iter().map(KeyRow::into_record).collect()
    }

    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<Revocation, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error("revoke", e))?;
        let before =
            select_key(&tx, id)?.ok_or_else(|| StoreError::NotFound { what: format!("key {id}") })?;
        tx.execute(
            "UPDATE api_keys SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id.as_str(), format_instant(at)],
        )
        .map_err(|e| sql_error("revoke", e))?;
        // Revoking a revoked key again moves nothing: every warm authorizer drops its cache when the
        // epoch moves.
        let was_already_revoked = before.status == KeyStatus::Revoked;
        let epoch: i64 = if was_already_revoked {
            tx.query_row(
                "SELECT COALESCE(MAX(value), 0) FROM meta WHERE name = ?1",
                [REVOCATION_EPOCH],
                |r| r.get(0),
            )
        } else {
            tx.query_row(
                "INSERT INTO meta (name, value) VALUES (?1, 1) \
                 ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                [REVOCATION_EPOCH],
                |r| r.get(0),
            )
        }
        .map_err(|e| sql_error("revoke", e))?;
        let record =
            select_key(&tx, id)?.ok_or_else(|| StoreError::NotFound { what: format!("key {id}") })?;
        tx.commit().map_err(|e| sql_error("revoke", e))?;
        Ok(Revocation { record, was_already_revoked, epoch: counter(epoch, "revocation epoch")? })
    }

    async fn revocation_epoch(&self) -> Result<u64, StoreError> {
        let epoch: Option<i64> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE name = ?1", [REVOCATION_EPOCH], |r| r.get(0))
            .optional()
            .map_err(|e| sql_error("read revocation epoch", e))?;
        counter(epoch.unwrap_or(0), "revocation epoch")
    }
    async fn update_key(&self, id: &KeyId, change: &KeyChange) -> Result<ApiKeyRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error("update key", e))?;
        let before =
            select_key(&tx, id)?.ok_or_else(|| StoreError::NotFound { what: format!("key {id}") })?;
        let after = change.applied_to(&before);
        if after != before {
            write_key(&tx, &after)?;
        }
        tx.commit().map_err(|e| sql_error("update key", e))?;
        Ok(after)
    }

    async fn rotate_key(
        &self,
        old: &KeyId,
        new: &ApiKeyRecord,
        grace_ends_at: DateTime<Utc>,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error("rotate key", e))?;
        let before =
            select_key(&tx, old)?.ok_or_else(|| StoreError::NotFound { what: format!("key {old}") })?;
        if before.status == KeyStatus::Revoked || before.grace_ends_at.is_some() {
            return Err(StoreError::ConditionFailed {
                what: format!("key {old} is revoked or already rotated"),
            });
        }
        insert_new_key(&tx, new, "rotate key")?;
        let after = ApiKeyRecord { grace_ends_at: Some(grace_ends_at), ..before };
        write_key(&tx, &after)?;
        tx.commit().map_err(|e| sql_error("rotate key", e))?;
        Ok(after)
    }
}

/// The column values of a key item, in [`KEY_COLUMNS`]'s order.
fn key_values(record: &ApiKeyRecord) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    use rusqlite::types::Value;
    let text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    let terms = if record.previous_terms.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&record.previous_terms).map_err(|e| corrupt(e.to_string()))?)
    };
    Ok(vec![
        Value::Text(record.id.as_str().to_owned()),
        Value::Text(record.hashed_key.as_str().to_owned()),
        Value::Text(record.user_email.as_str().to_owned()),
        Value::Text(record.status.as_str().to_owned()),
        text(record.plan.as_ref().map(|p| p.as_str().to_owned())),
        text(record.name.clone()),
        Value::Text(format_instant(record.created_at)),
        text(record.revoked_at.map(format_instant)),
        text(record.last_used.map(format_instant)),
        Value::Integer(to_i64(record.totals.usage_count, "usageCount")?),
        Value::Integer(to_i64(record.totals.successful_calls, "successfulCalls")?),
        Value::Integer(to_i64(record.totals.failed_calls, "failedCalls")?),
        Value::Integer(to_i64(record.imported.tally.usage_count, "importedUsageCount")?),
        Value::Integer(to_i64(record.imported.tally.successful_calls, "importedSuccessfulCalls")?),
        Value::Integer(to_i64(record.imported.tally.failed_calls, "importedFailedCalls")?),
        text(record.imported.last_used.map(format_instant)),
        text(record.grace_ends_at.map(format_instant)),
        text(terms),
    ])
}

/// Inserts a key item; [`StoreError::AlreadyExists`] if its id is taken.
fn insert_new_key(conn: &Connection, record: &ApiKeyRecord, operation: &str) -> Result<(), StoreError> {
    let placeholders: Vec<String> = (1..=KEY_COLUMNS.split(',').count()).map(|i| format!("?{i}")).collect();
    let inserted = conn
        .execute(
            &format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
                placeholders.join(", ")
            ),
            rusqlite::params_from_iter(key_values(record)?),
        )
        .map_err(|e| sql_error(operation, e))?;
    match inserted {
        0 => Err(StoreError::AlreadyExists { what: format!("key {}", record.id) }),
        _ => Ok(()),
    }
}

/// Writes every column of an existing key item (inside the caller's transaction).
fn write_key(tx: &Connection, record: &ApiKeyRecord) -> Result<(), StoreError> {
    let columns: Vec<&str> = KEY_COLUMNS.split(',').map(str::trim).collect();
    let assignments: Vec<String> =
        columns.iter().enumerate().skip(1).map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
    tx.execute(
        &format!("UPDATE api_keys SET {} WHERE id = ?1", assignments.join(", ")),
        rusqlite::params_from_iter(key_values(record)?),
    )
    .map_err(|e| sql_error("update key", e))?;
    Ok(())
}

impl UsageReader for SqliteStore {
    async fn month_usage(&self, key_id: &KeyId, month: Month) -> Result<Vec<DayUsage>, StoreError> {
        self.key_usage(key_id, month.first_day(), month.last_day())
    }

    async fn lifetime_usage(&self, key_id: &KeyId) -> Result<Vec<DayUsage>, StoreError> {
        self.key_usage(key_id, Day::EARLIEST, Day::LATEST)
    }
}

impl SqliteStore {
    /// A key's day items in `from..=to` with its parked usage added in.
    fn key_usage(&self, key_id: &KeyId, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let parked = self.parked_of(Some(key_id), from, to)?;
        Ok(with_parked(self.key_items(key_id, from, to)?, &parked.entries))
    }

    /// A key's day items in `from..=to`, ordered by day.
    fn key_items(&self, key_id: &KeyId, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let op = |e| sql_error("read a key's day items", e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DAY_COLUMNS} FROM usage_counters WHERE key_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day"
            ))
            .map_err(op)?;
        let rows = stmt
            .query_map(params![key_id.as_str(), from.to_string(), to.to_string()], read_day_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(op)?;
        rows.into_iter().map(day_usage_of).collect()
    }

    /// Parked usage of one key (or every key) in `from..=to`; the handles are the parked items.
    fn parked_of(&self, key_id: Option<&KeyId>, from: Day, to: Day) -> Result<ParkedUsage, StoreError> {
        let op = |e| sql_error("read parked usage", e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT item, key_id, day, successful_calls, failed_calls, usage_count, last_used FROM parked_usage \
                 WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR key_id = ?3) ORDER BY id",
            )
            .map_err(op)?;
        type Row = (String, String, String, i64, i64, i64, String);
        let rows: Vec<Row> = stmt
            .query_map(params![from.to_string(), to.to_string(), key_id.map(KeyId::as_str)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(op)?;
        let mut parked = ParkedUsage::default();
        let mut items = std::collections::BTreeSet::new();
        for (item, key, day, s, f, u, last_used) in rows {
            if items.insert(item.clone()) {
                parked.handles.push(item);
            }
            parked.entries.push(DayDelta {
                key_id: KeyId::parse(&key).map_err(|e| corrupt(e.to_string()))?,
                day: day.parse().map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?,
                tally: tally_of(s, f, u)?,
                last_used: parse_instant(&last_used).map_err(|e| corrupt(e.to_string()))?,
            });
        }
        Ok(parked)
    }
}

type DayRow = (String, String, i64, i64, i64, Option<String>, Option<String>);

/// The three counters as stored (SQLite integers are signed), checked.
fn tally_of(successful: i64, failed: i64, usage: i64) -> Result<Tally, StoreError> {
    Ok(Tally {
        successful_calls: counter(successful, "successfulCalls")?,
        failed_calls: counter(failed, "failedCalls")?,
        usage_count: counter(usage, "usageCount")?,
    })
}

fn day_usage_of(row: DayRow) -> Result<DayUsage, StoreError> {
    let (key_id, day, successful, failed, usage, last_used, reconciled_at) = row;
    Ok(DayUsage {
        key_id: KeyId::parse(&key_id).map_err(|e| corrupt(e.to_string()))?,
        day: day.parse().map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?,
        tally: tally_of(successful, failed, usage)?,
        last_used: instant(last_used, "lastUsed")?,
        reconciled_at: instant(reconciled_at, "reconciledAt")?,
    })
}

const DAY_COLUMNS: &str =
    "key_id, day, successful_calls, failed_calls, usage_count, last_used, reconciled_at";

fn read_day_row(r: &Row<'_>) -> rusqlite::Result<DayRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn tally_params(tally: Tally) -> Result<[i64; 3], StoreError> {
    Ok([
        to_i64(tally.successful_calls, "successfulCalls")?,
        to_i64(tally.failed_calls, "failedCalls")?,
        to_i64(tally.usage_count, "usageCount")?,
    ])
}

impl CounterCorrector for SqliteStore {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DAY_COLUMNS} FROM usage_counters WHERE day >= ?1 AND day <= ?2 ORDER BY key_id, day"
            ))
            .map_err(|e| sql_error("read day items", e))?;
        let rows = stmt
            .query_map(params![from.to_string(), to.to_string()], read_day_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| sql_error("read day items", e))?;
        rows.into_iter().map(day_usage_of).collect()
    }

    async fn day_item(&self, key_id: &KeyId, day: Day) -> Result<Option<DayUsage>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {DAY_COLUMNS} FROM usage_counters WHERE key_id = ?1 AND day = ?2"),
                params![key_id.as_str(), day.to_string()],
                read_day_row,
            )
            .optional()
            .map_err(|e| sql_error("read day item", e))?;
        row.map(day_usage_of).transpose()
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        let op = |e| sql_error("correct day", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        let key = correction.key_id.as_str();
        let day = correction.day.to_string();
        if tx
            .query_row("SELECT 1 FROM api_keys WHERE id = ?1", [key], |_| Ok(()))
            .optional()
            .map_err(op)?
            .is_none()
        {
            return Ok(CorrectionOutcome::UnknownKey);
        }
        let current = tx
            .query_row(
                "SELECT successful_calls, failed_calls, usage_count FROM usage_counters WHERE key_id = ?1 AND day = ?2",
                params![key, day],
                |r| Ok([r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?]),
            )
            .optional()
            .map_err(op)?;
        let expected = correction.expected.map(tally_params).transpose()?;
        if current != expected {
            return Ok(CorrectionOutcome::Changed);
        }
        let [s, f, u] = tally_params(correction.target)?;
        tx.execute(
            "INSERT INTO usage_counters (key_id, day, successful_calls, failed_calls, usage_count, reconciled_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key_id, day) DO UPDATE SET \
             successful_calls = excluded.successful_calls, failed_calls = excluded.failed_calls, \
             usage_count = excluded.usage_count, reconciled_at = excluded.reconciled_at",
            params![key, day, s, f, u, format_instant(correction.at)],
        )
        .map_err(op)?;
        tx.commit().map_err(op)?;
        Ok(CorrectionOutcome::Applied)
    }

    async fn refresh_key_totals(&self, key_id: &KeyId) -> Result<Option<UsageTotals>, StoreError> {
        let op = |e| sql_error("refresh key totals", e);
        let row = self
            .conn()
            .query_row(
                "UPDATE api_keys SET (successful_calls, failed_calls, usage_count, last_used) = \
                 (SELECT COALESCE(SUM(s), 0), COALESCE(SUM(f), 0), COALESCE(SUM(u), 0), MAX(t) FROM ( \
                 SELECT successful_calls AS s, failed_calls AS f, usage_count AS u, last_used AS t \
                 FROM usage_counters WHERE key_id = ?1 UNION ALL \
                 SELECT successful_calls, failed_calls, usage_count, last_used FROM parked_usage WHERE key_id = ?1 \
                 UNION ALL SELECT imported_successful_calls, imported_failed_calls, imported_usage_count, \
                 imported_last_used FROM api_keys WHERE id = ?1)) \
                 WHERE id = ?1 RETURNING successful_calls, failed_calls, usage_count, last_used",
                [key_id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(op)?;
        row.map(|(s, f, u, last_used)| {
            Ok(UsageTotals { tally: tally_of(s, f, u)?, last_used: instant(last_used, "lastUsed")? })
        })
        .transpose()
    }

    async fn parked_usage(&self, from: Day, to: Day) -> Result<ParkedUsage, StoreError> {
        self.parked_of(None, from, to)
    }

    async fn clear_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        let op = |e| sql_error("clear parked usage", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM parked_usage WHERE item = ?1").map_err(op)?;
            for handle in handles {
                delete.execute([handle]).map_err(op)?;
            }
        }
        tx.commit().map_err(op)
    }

    async fn record_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        let record = serde_json::to_string(run)
            .map_err(|e| StoreError::Other { operation: "record run".into(), source: e.into() })?;
        self.conn()
            .execute(
                "INSERT INTO reconcile_runs (run_id, started_at, record) VALUES (?1, ?2, ?3)",
                params![run.run_id, format_instant(run.started_at), record],
            )
            .map_err(|e| sql_error("record run", e))?;
        Ok(())
    }
}

impl UsageWriter for SqliteStore {
    async fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let op = |e| sql_error("apply deliveries", e);
        let mut conn = self.conn();
        // One transaction holds the buffer and its markers: it all happens once, or not at all.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        let now = format_instant(applied_at);
        let expires = format_instant(applied_at + MARKER_TTL);
        tx.execute("DELETE FROM delivery_marks WHERE expires_at < ?1", [&now]).map_err(op)?;
        let mut report = ApplyReport::default();
        let mut slots: BTreeMap<MarkerSlot, Vec<&BatchDelta>> = BTreeMap::new();
        for delivery in deliveries {
            slots.entry(delivery.slot()).or_default().push(delivery);
        }
        let mut fresh: Vec<&BatchDelta> = Vec::new();
        {
            let mut held =
                tx.prepare_cached("SELECT COUNT(*) FROM delivery_marks WHERE slot = ?1").map_err(op)?;
            let mut mark = tx
                .prepare_cached(
                    "INSERT INTO delivery_marks (slot, digest, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )
                .map_err(op)?;
            for (slot, members) in &slots {
                let name = slot.name();
                let before: i64 = held.query_row([&name], |r| r.get(0)).map_err(op)?;
                let mut added = 0;
                for delivery in members {
                    // The digest's 64 bits, stored as SQLite's signed integer.
                    let digest = i64::from_ne_bytes(delivery.batch_id().short_digest().to_ne_bytes());
                    if mark.execute(params![name, digest, expires]).map_err(op)? == 1 {
                        added += 1;
                        fresh.push(delivery);
                    } else {
                        report.deliveries_already_applied += 1;
                    }
                }
                report.marker_writes += 1;
                report.marker_write_units +=
                    capacity::marker_write_units(usize::try_from(before).unwrap_or(0), added);
            }
        }
        report.deliveries_applied = fresh.len();
        let days = merge_days(fresh.iter().copied());
        {
            let mut known = self.known_keys.lock().unwrap_or_else(PoisonError::into_inner);
            let mut key_exists = tx.prepare_cached("SELECT 1 FROM api_keys WHERE id = ?1").map_err(op)?;
            let mut later_use = tx
                .prepare_cached(
                    "SELECT 1 FROM usage_counters WHERE key_id = ?1 AND day = ?2 AND last_used >= ?3",
                )
                .map_err(op)?;
            let mut add_to_day = tx
                .prepare_cached(
                    "INSERT INTO usage_counters (key_id, day, successful_calls, failed_calls, usage_count, last_used) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key_id, day) DO UPDATE SET \
                     successful_calls = successful_calls + excluded.successful_calls, \
                     failed_calls = failed_calls + excluded.failed_calls, \
                     usage_count = usage_count + excluded.usage_count, \
                     last_used = MAX(COALESCE(last_used, ''), excluded.last_used)",
                )
                .map_err(op)?;
            let mut existing = Vec::with_capacity(days.len());
            for group in days.chunk_by(|a, b| a.key_id == b.key_id) {
                let key_id = &group[0].key_id;
                if !known.contains(key_id) {
                    report.keys_read += 1;
                    if key_exists.exists([key_id.as_str()]).map_err(op)? {
                        known.insert(key_id.clone());
                    } else {
                        report.unknown_keys.insert(key_id.clone(), group.iter().map(|d| d.tally).sum());
                        continue;
                    }
                }
                existing.extend(group.iter().cloned());
            }
            let (hot, parked) = split_parked(existing);
            for day in &hot {
                let (key, day_text, at) =
                    (day.key_id.as_str(), day.day.to_string(), format_instant(day.last_used));
                if later_use.exists(params![key, day_text, at]).map_err(op)? {
                    report.last_used_rewrites += 1;
                }
                let [s, f, u] = tally_params(day.tally)?;
                add_to_day.execute(params![key, day_text, s, f, u, at]).map_err(op)?;
                report.day_items_written += 1;
            }
            let mut park = tx
                .prepare_cached(
                    "INSERT INTO parked_usage (item, key_id, day, successful_calls, failed_calls, usage_count, last_used) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(op)?;
            // Rows of one bucket, day and buffer make one parked item, as in DynamoDB.
            let buffer = buffer_digest(&fresh);
            for ((bucket, day), entries) in &parked {
                let item = format!("{bucket:02}|{day}|{buffer:016x}");
                for entry in entries {
                    let [s, f, u] = tally_params(entry.tally)?;
                    park.execute(params![
                        item,
                        entry.key_id.as_str(),
                        entry.day.to_string(),
                        s,
                        f,
                        u,
                        format_instant(entry.last_used)
                    ])
                    .map_err(op)?;
                }
                report.count_parked_item(entries.len());
            }
        }
        tx.commit().map_err(op)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meter.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("upgrade meter"), "{err}");
    }

    #[test]
    fn reopening_keeps_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/meter.db");
        drop(SqliteStore::open(&path).unwrap());
        let store = SqliteStore::open(&path).unwrap();
        let version: usize = store.conn().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema_version());
    }
}
