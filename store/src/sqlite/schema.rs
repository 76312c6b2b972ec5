//! The schema: migrations applied in order, `PRAGMA user_version` recording how many have run.

use std::path::Path;

use meter_model::StoreError;
use rusqlite::{Connection, TransactionBehavior};

use super::error::sql_error;

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
    // One reconcile run at a time: the lease a run holds while it corrects the counters.
    r"
CREATE TABLE run_leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  TEXT NOT NULL
) WITHOUT ROWID;
",
    // Key totals kept by the writes (CONTRACTS.md §2): the parked usage a key's totals include, as of the
    // last refresh. The totals are recounted once here so that they and the snapshot agree.
    r"
ALTER TABLE api_keys ADD COLUMN parked_successful_calls INTEGER NOT NULL DEFAULT 0 CHECK (parked_successful_calls >= 0);
ALTER TABLE api_keys ADD COLUMN parked_failed_calls INTEGER NOT NULL DEFAULT 0 CHECK (parked_failed_calls >= 0);
ALTER TABLE api_keys ADD COLUMN parked_usage_count INTEGER NOT NULL DEFAULT 0 CHECK (parked_usage_count >= 0);
UPDATE api_keys SET
    (parked_successful_calls, parked_failed_calls, parked_usage_count) = (
        SELECT COALESCE(SUM(successful_calls), 0), COALESCE(SUM(failed_calls), 0), COALESCE(SUM(usage_count), 0)
        FROM parked_usage WHERE key_id = api_keys.id),
    (successful_calls, failed_calls, usage_count, last_used) = (
        SELECT COALESCE(SUM(s), 0), COALESCE(SUM(f), 0), COALESCE(SUM(u), 0), MAX(t) FROM (
            SELECT successful_calls AS s, failed_calls AS f, usage_count AS u, last_used AS t
            FROM usage_counters WHERE key_id = api_keys.id
            UNION ALL SELECT successful_calls, failed_calls, usage_count, last_used
            FROM parked_usage WHERE key_id = api_keys.id
            UNION ALL SELECT api_keys.imported_successful_calls, api_keys.imported_failed_calls,
                api_keys.imported_usage_count, api_keys.imported_last_used));
",
    // Parked usage summed per key as it is parked and cleared, and the parked items: the refresh reads
    // these (one row per key with parked usage) instead of every parked row, every minute in `meter
    // serve` and every 10 simulated minutes in the demo.
    r"
CREATE TABLE parked_totals (
    key_id           TEXT PRIMARY KEY NOT NULL,
    successful_calls INTEGER NOT NULL,
    failed_calls     INTEGER NOT NULL,
    usage_count      INTEGER NOT NULL,
    last_used        TEXT NOT NULL,
    entries          INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO parked_totals
    SELECT key_id, SUM(successful_calls), SUM(failed_calls), SUM(usage_count), MAX(last_used), COUNT(*)
    FROM parked_usage GROUP BY key_id;
CREATE TABLE parked_items (item TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
INSERT INTO parked_items SELECT DISTINCT item FROM parked_usage;
",
    // A day's open usage (CONTRACTS.md §2): what realtime counted since reconcile last set the day,
    // which the next run closes. A day no run has set yet is open whole.
    r"
ALTER TABLE usage_counters ADD COLUMN open_successful_calls INTEGER NOT NULL DEFAULT 0 CHECK (open_successful_calls >= 0);
ALTER TABLE usage_counters ADD COLUMN open_failed_calls INTEGER NOT NULL DEFAULT 0 CHECK (open_failed_calls >= 0);
ALTER TABLE usage_counters ADD COLUMN open_usage_count INTEGER NOT NULL DEFAULT 0 CHECK (open_usage_count >= 0);
UPDATE usage_counters SET open_successful_calls = successful_calls, open_failed_calls = failed_calls,
    open_usage_count = usage_count WHERE reconciled_at IS NULL;
",
    // When each parked row was parked: a reconcile folds only what was parked before its cutoff, and
    // folds it in the correction's own transaction. Rows parked before this column read as oldest.
    r"
ALTER TABLE parked_usage ADD COLUMN parked_at TEXT;
",
    // Plan quotas (ARCHITECTURE.md): the terms a key carries, and the month its customer's hard quota
    // refuses it in.
    r"
ALTER TABLE api_keys ADD COLUMN quota_calls INTEGER CHECK (quota_calls > 0);
ALTER TABLE api_keys ADD COLUMN quota_mode TEXT CHECK (quota_mode IN ('hard', 'soft'));
ALTER TABLE api_keys ADD COLUMN quota_alerts TEXT;
ALTER TABLE api_keys ADD COLUMN quota_refused_in TEXT;
",
    // Each customer's month total against its quota, and the alert thresholds already announced
    // (comma-separated percentages).
    r"
CREATE TABLE quota_usage (
    customer TEXT NOT NULL,
    month    TEXT NOT NULL,
    used     INTEGER NOT NULL CHECK (used >= 0),
    sent     TEXT NOT NULL,
    PRIMARY KEY (customer, month)
) WITHOUT ROWID;
CREATE INDEX api_keys_user_email ON api_keys (user_email);
",
    // Whether any key carries a quota is asked once per buffer: answered from this index, not by
    // reading every key row.
    r"
CREATE INDEX api_keys_with_quota ON api_keys (quota_mode) WHERE quota_mode IS NOT NULL;
",
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

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

    /// Undoes migrations 14 to 12 (plan quotas: the month totals, and the terms on the key rows).
    macro_rules! before_quotas {
        () => {
            "DROP INDEX api_keys_with_quota; DROP TABLE quota_usage; DROP INDEX api_keys_user_email; ALTER TABLE api_keys DROP COLUMN quota_calls; ALTER TABLE api_keys DROP COLUMN quota_mode; \
             ALTER TABLE api_keys DROP COLUMN quota_alerts; ALTER TABLE api_keys DROP COLUMN quota_refused_in; "
        };
    }
    const BEFORE_QUOTAS: &str = before_quotas!();

    /// Undoes migrations 14 to 11 (when each parked row was parked).
    const BEFORE_PARKED_AT: &str =
        concat!(before_quotas!(), "ALTER TABLE parked_usage DROP COLUMN parked_at;");

    /// Undoes migrations 14 to 10 (the open usage columns).
    const BEFORE_OPEN_USAGE: &str = concat!(
        before_quotas!(),
        "ALTER TABLE parked_usage DROP COLUMN parked_at; \
         ALTER TABLE usage_counters DROP COLUMN open_successful_calls; \
         ALTER TABLE usage_counters DROP COLUMN open_failed_calls; \
         ALTER TABLE usage_counters DROP COLUMN open_usage_count;"
    );

    /// A store of this schema, taken back by `sql` (which sets `user_version`), reopened: the
    /// migrations after that version run again on the data `sql` left.
    fn migrated_from(sql: &str) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meter.db");
        SqliteStore::open(&path).unwrap().conn().execute_batch(sql).unwrap();
        let store = SqliteStore::open(&path).unwrap();
        (dir, store)
    }

    #[test]
    fn the_parked_sums_are_built_from_the_parked_rows_when_the_schema_moves_to_them() {
        let (_dir, store) = migrated_from(&format!(
            "INSERT INTO parked_usage (item, key_id, day, successful_calls, failed_calls, usage_count, last_used) VALUES \
             ('01|2026-11-30|a', 'aaaaaaaaaaaa', '2026-11-30', 1, 0, 1, '2026-11-30T10:00:00.000Z'), \
             ('01|2026-11-30|b', 'aaaaaaaaaaaa', '2026-11-30', 0, 1, 1, '2026-11-30T11:00:00.000Z'); \
             DROP TABLE parked_totals; DROP TABLE parked_items; {BEFORE_OPEN_USAGE} PRAGMA user_version = 8;"
        ));
        let sums: (i64, i64, i64, String, i64) = store
            .conn()
            .query_row(
                "SELECT successful_calls, failed_calls, usage_count, last_used, entries FROM parked_totals",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(sums, (1, 1, 2, "2026-11-30T11:00:00.000Z".to_owned(), 2));
        let items: i64 =
            store.conn().query_row("SELECT COUNT(*) FROM parked_items", [], |r| r.get(0)).unwrap();
        assert_eq!(items, 2);
    }

    #[test]
    fn days_no_run_has_set_are_open_when_the_schema_moves_to_open_usage() {
        let (_dir, store) = migrated_from(&format!(
            "{BEFORE_OPEN_USAGE} \
             INSERT INTO usage_counters (key_id, day, successful_calls, failed_calls, usage_count, reconciled_at) VALUES \
             ('aaaaaaaaaaaa', '2026-11-29', 4, 1, 5, '2026-11-30T03:00:00.000Z'), \
             ('aaaaaaaaaaaa', '2026-11-30', 2, 1, 3, NULL); PRAGMA user_version = 9;"
        ));
        let open: Vec<(String, i64, i64, i64)> = store
            .conn()
            .prepare("SELECT day, open_successful_calls, open_failed_calls, open_usage_count FROM usage_counters ORDER BY day")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(open, [("2026-11-29".to_owned(), 0, 0, 0), ("2026-11-30".to_owned(), 2, 1, 3)]);
    }

    #[test]
    fn rows_parked_before_their_time_was_kept_are_the_oldest() {
        let (_dir, store) = migrated_from(&format!(
            "{BEFORE_PARKED_AT} \
             INSERT INTO parked_usage (item, key_id, day, successful_calls, failed_calls, usage_count, last_used) VALUES \
             ('01|2026-11-30|a', 'aaaaaaaaaaaa', '2026-11-30', 1, 0, 1, '2026-11-30T10:00:00.000Z'); \
             PRAGMA user_version = 10;"
        ));
        let day: meter_model::Day = "2026-11-30".parse().unwrap();
        let until = meter_model::time::parse_instant("2000-01-01T00:00:00Z").unwrap();
        let parked = store.parked_of(None, day, day, Some(until)).unwrap();
        assert_eq!(parked.handles, ["01|2026-11-30|a"], "any reconcile takes them");
    }

    #[test]
    fn keys_from_before_quotas_read_with_none() {
        let key = meter_model::ApiKey::generate().unwrap();
        let (_dir, store) = migrated_from(&format!(
            "{BEFORE_QUOTAS} \
             INSERT INTO api_keys (id, hashed_key, user_email, status, created_at) VALUES \
             ('{}', '{}', 'ada@example.com', 'active', '2026-11-01T00:00:00.000Z'); \
             PRAGMA user_version = 11;",
            key.id(),
            key.hashed().as_str()
        ));
        let record = tokio_test_block_on(meter_model::KeyStore::get_key(&store, key.id())).unwrap().unwrap();
        assert_eq!((record.quota, record.quota_refused_in), (None, None));
    }

    fn tokio_test_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
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
