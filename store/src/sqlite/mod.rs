//! The embedded store: one SQLite file, created on first use, schema-versioned with
//! `PRAGMA user_version`, every write in a transaction.
//!
//! One concern a module, as the DynamoDB store's: `schema` migrates the file, `error` translates
//! SQLite's errors into [`StoreError`]s, `item` converts rows, `keys` is the [`KeyStore`],
//! `counters` reads and corrects the day items, `parked` holds the parked usage and `batch` applies
//! the realtime path's buffers of deliveries.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use meter_model::{KeyId, StoreError};
use rusqlite::Connection;

use self::error::sql_error;
use self::schema::migrate;

mod batch;
mod counters;
mod error;
mod item;
mod keys;
mod parked;
mod quota;
mod schema;

pub use schema::schema_version;

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

    /// Opens a store that is rebuilt from scratch on every run and never read by another process
    /// (`meter demo`): its rollback journal is kept in memory and nothing is synced, so each commit is
    /// one write of its pages instead of a WAL append, a checkpoint copy and their syncs (a large
    /// simulated hour's reconcile: 35 s → 12 s). A crash loses the file, which the next run rebuilds.
    pub fn open_scratch(path: &Path) -> Result<Self, StoreError> {
        let store = Self::open(path)?;
        store
            .conn()
            .execute_batch("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;")
            .map_err(|e| sql_error("open", e))?;
        Ok(store)
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
        // Checkpoint the WAL every 64 MiB rather than every 4 MiB: a night's tens of thousands of small
        // corrections rewrite the same pages, which a checkpoint then copies (and syncs) once instead of
        // over and over (a large simulated hour's reconcile: 64 s → 36 s).
        conn.pragma_update(None, "wal_autocheckpoint", 16_384).map_err(|e| sql_error("open", e))?;
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
