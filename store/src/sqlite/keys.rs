//! The [`KeyStore`]: key items, the hashed-key lookup, revocation with its epoch, updates and rotation.

use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use meter_model::{ApiKeyRecord, HashedKey, KeyChange, KeyId, KeyStatus, KeyStore, Revocation, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use super::error::{corrupt, counter, sql_error};
use super::item::{KEY_COLUMNS, KeyRow, key_values};

const REVOCATION_EPOCH: &str = "revocation_epoch";

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
            bump_revocation_epoch(&tx)
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

/// Moves the revocation epoch by one inside the caller's transaction; answers the new epoch. Every
/// warm authorizer drops its cache when it sees the move.
pub(super) fn bump_revocation_epoch(tx: &Connection) -> rusqlite::Result<i64> {
    tx.query_row(
        "INSERT INTO meta (name, value) VALUES (?1, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1 \
         RETURNING value",
        [REVOCATION_EPOCH],
        |r| r.get(0),
    )
}
