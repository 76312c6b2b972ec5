//! The ports: the narrow traits through which stages reach storage. The SQLite, DynamoDB and test
//! adapters implement them; handlers are generic over them and never see an SDK type.

use std::error::Error as StdError;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::batch::{ApplyReport, BatchDelta, ParkedUsage};
use crate::drift::{CorrectionOutcome, DayCorrection, ReconcileRun};
use crate::items::{ApiKeyRecord, DayUsage, Email, KeyChange, UsageTotals};
use crate::key::{HashedKey, KeyId};
use crate::time::Day;
use crate::time::Month;
use crate::usage::{RejectReason, UsageEvent};

/// A boxed underlying error, kept for the error chain.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong with a store, in domain terms. Adapters translate their own errors into these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The item does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// An item with that key exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was to be created.
        what: String,
    },
    /// A conditional write found the item changed since it was read.
    #[error("conditional write failed: {what}")]
    ConditionFailed {
        /// Which write.
        what: String,
    },
    /// Throttled or briefly unavailable: the same call may succeed if retried.
    #[error("store busy or throttled during {operation}; retry")]
    Retryable {
        /// The operation.
        operation: String,
        /// The adapter's error.
        #[source]
        source: BoxError,
    },
    /// The store cannot be reached or is not set up (no such file, table or endpoint).
    #[error("store unavailable during {operation}: {hint}")]
    Unavailable {
        /// The operation.
        operation: String,
        /// What to check.
        hint: String,
        /// The adapter's error.
        #[source]
        source: Option<BoxError>,
    },
    /// An item in the store does not follow the contract.
    #[error("stored item is not valid: {detail}")]
    Corrupt {
        /// What is wrong with it.
        detail: String,
    },
    /// Anything else the adapter reports.
    #[error("store error during {operation}")]
    Other {
        /// The operation.
        operation: String,
        /// The adapter's error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. } | Self::ConditionFailed { .. })
    }

    /// Whether trying again a little later may succeed: the call may be retried, or the store could
    /// not be reached at all and may be back in a moment. What invocations and jobs report as
    /// retryable.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.is_retryable() || matches!(self, Self::Unavailable { .. })
    }
}

/// The outcome of revoking a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The key as it is now (revoked).
    pub record: ApiKeyRecord,
    /// Whether it was revoked already before this call (revoking again is harmless).
    pub was_already_revoked: bool,
    /// The revocation epoch this call's bump produced; warm authorizers drop their caches when it moves.
    pub epoch: u64,
}

/// The `ApiKeys` table and the revocation epoch.
pub trait KeyStore: Send + Sync {
    /// Creates a key item; fails with [`StoreError::AlreadyExists`] if the id is taken.
    fn insert_key(&self, record: &ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads a key item by id with a strongly consistent read.
    fn get_key(&self, id: &KeyId) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Finds a key item by its hash (keys of another format), then reads it consistently by id.
    fn find_key_by_hash(
        &self,
        hashed_key: &HashedKey,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Every key item, ordered by id. An operator's listing: never used on the request path.
    fn list_keys(&self) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;

    /// Marks a key revoked (keeping the first revocation time), then bumps the revocation epoch, so
    /// that whoever sees the new epoch finds the key revoked. Each call bumps the epoch once; if the
    /// call fails it can simply be repeated. Fails with [`StoreError::NotFound`] for an unknown id.
    fn revoke_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Revocation, StoreError>> + Send;

    /// The current revocation epoch (0 before any revocation).
    fn revocation_epoch(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Applies `change` to the key item `id` (the fields it sets; when it sets the imported usage, the
    /// lifetime totals move by the difference) and answers the item as it is now.
    /// [`StoreError::NotFound`] for an unknown id.
    fn update_key(
        &self,
        id: &KeyId,
        change: &KeyChange,
    ) -> impl Future<Output = Result<ApiKeyRecord, StoreError>> + Send;

    /// A rotation, both writes or neither: creates `new` and ends `old`'s use at `grace_ends_at`.
    /// Answers `old` as it is now. [`StoreError::NotFound`] for an unknown `old`,
    /// [`StoreError::ConditionFailed`] when `old` is revoked or already rotated,
    /// [`StoreError::AlreadyExists`] when `new`'s id is taken.
    fn rotate_key(
        &self,
        old: &KeyId,
        new: &ApiKeyRecord,
        grace_ends_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApiKeyRecord, StoreError>> + Send;
}

impl<S: KeyStore> KeyStore for &S {
    fn insert_key(&self, record: &ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).insert_key(record)
    }

    fn get_key(&self, id: &KeyId) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send {
        (**self).get_key(id)
    }

    fn find_key_by_hash(
        &self,
        hashed_key: &HashedKey,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send {
        (**self).find_key_by_hash(hashed_key)
    }

    fn list_keys(&self) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send {
        (**self).list_keys()
    }

    fn revoke_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Revocation, StoreError>> + Send {
        (**self).revoke_key(id, at)
    }

    fn revocation_epoch(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).revocation_epoch()
    }

    fn update_key(
        &self,
        id: &KeyId,
        change: &KeyChange,
    ) -> impl Future<Output = Result<ApiKeyRecord, StoreError>> + Send {
        (**self).update_key(id, change)
    }

    fn rotate_key(
        &self,
        old: &KeyId,
        new: &ApiKeyRecord,
        grace_ends_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApiKeyRecord, StoreError>> + Send {
        (**self).rotate_key(old, new, grace_ends_at)
    }
}

/// Reading the `UsageCounters` table.
pub trait UsageReader: Send + Sync {
    /// A key's days in a month (day items, open days, parked usage added in), ordered by day.
    fn month_usage(
        &self,
        key_id: &KeyId,
        month: Month,
    ) -> impl Future<Output = Result<Vec<DayUsage>, StoreError>> + Send;

    /// All of a key's days (day items, open days, parked usage added in), ordered by day: its live
    /// lifetime usage.
    fn lifetime_usage(
        &self,
        key_id: &KeyId,
    ) -> impl Future<Output = Result<Vec<DayUsage>, StoreError>> + Send;
}

/// Plan quotas' month totals and refusals (ARCHITECTURE.md, "Plan quotas and usage alerts"), for the
/// commands that change a key's quota.
pub trait QuotaLedger: Send + Sync {
    /// Billable calls of `customer`'s keys with a quota in `month`, as counted in realtime.
    fn quota_used(
        &self,
        customer: &Email,
        month: Month,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Marks (`refused`) or clears `month`'s refusal on each of `customer`'s keys with a hard quota
    /// (clearing only marks of that month), and moves the revocation epoch when any changed, so that
    /// every authorizer reads them again. Answers how many keys changed.
    fn set_quota_refusal(
        &self,
        customer: &Email,
        month: Month,
        refused: bool,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Applying delivered batches to the counters (CONTRACTS.md §8).
pub trait UsageWriter: Send + Sync {
    /// Applies one buffer of deliveries: marks each delivery in its [`MarkerSlot`](crate::batch::MarkerSlot)
    /// (kept [`MARKER_TTL`](crate::batch::MARKER_TTL) after `applied_at`), skips those marked before,
    /// and adds the rest, merged, to each key's open days and lifetime totals with one write per key
    /// (CONTRACTS.md §2), moving its `lastUsed` forward (never back); a key's day with a single call
    /// in the buffer is parked instead ([`split_parked`](crate::batch::split_parked)), in a few shared
    /// items that readers add in and reconcile clears. Keys that do not exist get nothing; they are
    /// listed in the report. Parked usage reaches the key totals at the next
    /// [`refresh_parked_totals`](CounterCorrector::refresh_parked_totals).
    ///
    /// `Err` means nothing was marked or counted, so the call may be repeated. Once deliveries are
    /// marked, a counter write that fails is reported in [`ApplyReport::not_applied`](crate::ApplyReport)
    /// instead: repeating the call would find the deliveries marked, so that usage is left to reconcile.
    fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApplyReport, StoreError>> + Send;
}

impl<S: UsageWriter> UsageWriter for &S {
    fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<ApplyReport, StoreError>> + Send {
        (**self).apply_deliveries(deliveries, applied_at)
    }
}

/// What reconciliation needs of the counters (CONTRACTS.md §8): read the keys' days of a range, set one
/// conditionally (closing its open usage), and refresh a key's lifetime totals from its days.
pub trait CounterCorrector: Send + Sync {
    /// Every key's days in `from..=to`: the day items with the keys' open usage added in (bookkeeping
    /// and parked usage excluded). A nightly job's read, never on the request path.
    fn day_items(&self, from: Day, to: Day)
    -> impl Future<Output = Result<Vec<DayUsage>, StoreError>> + Send;

    /// One key's day (its item and open usage), read consistently; `None` when it has neither.
    fn day_item(
        &self,
        key_id: &KeyId,
        day: Day,
    ) -> impl Future<Output = Result<Option<DayUsage>, StoreError>> + Send;

    /// Sets the day item to `correction.target` (and its `lastUsed` to `correction.last_used`, when
    /// given) and closes the day's open usage, only if the day still holds `correction.expected` of
    /// which `correction.expected_open` open (nothing for `None`; then only if the key exists), and
    /// moves the key's lifetime totals by the same difference (`lastUsed` forward), in one atomic
    /// write. With `correction.folded_until`, the same write marks the key's parked entries of that
    /// day parked at or before it as folded: no reader counts them again, cleared or not.
    fn correct_day(
        &self,
        correction: &DayCorrection,
    ) -> impl Future<Output = Result<CorrectionOutcome, StoreError>> + Send;

    /// The usage parked in `from..=to`, with the handles of the items that hold it.
    fn parked_usage(
        &self,
        from: Day,
        to: Day,
    ) -> impl Future<Output = Result<ParkedUsage, StoreError>> + Send {
        self.parked_usage_until(from, to, None)
    }

    /// [`parked_usage`](Self::parked_usage) of the items parked at or before `until` only (all,
    /// without): what a reconcile that started at `until` folds.
    fn parked_usage_until(
        &self,
        from: Day,
        to: Day,
        until: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<ParkedUsage, StoreError>> + Send;

    /// Deletes the parked items of `handles` (once the day items hold the authoritative counts).
    fn clear_parked(&self, handles: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Brings the parked usage into the keys' lifetime totals: reads every parked item once, and for
    /// each key whose parked usage differs from the snapshot its item holds (`parked*` on `ApiKeys`),
    /// sets the snapshot and moves the totals by the difference (`lastUsed` forward), conditionally on
    /// the snapshot it replaces. Repeating it, or running two at once, is harmless.
    fn refresh_parked_totals(&self) -> impl Future<Output = Result<crate::ParkedRefresh, StoreError>> + Send;

    /// Recounts a key's lifetime totals (`successfulCalls`, `failedCalls`, `usageCount`, `lastUsed` on
    /// `ApiKeys`): sets them to the sum of all its days (day items and open days), read consistently, the parked usage its
    /// snapshot holds (`parked*`: the next [`refresh_parked_totals`](Self::refresh_parked_totals)
    /// moves them by what that lacks) and the usage imported with the key (`imported*`). Returns the
    /// totals, or `None` for a key that does not exist. A repair, reading in proportion to the key's
    /// age: the writes keep the totals (CONTRACTS.md §2); this puts them right after the tables were
    /// changed by other means (a restore of one table, an edit by hand).
    fn refresh_key_totals(
        &self,
        key_id: &KeyId,
    ) -> impl Future<Output = Result<Option<UsageTotals>, StoreError>> + Send;

    /// Records a finished run.
    fn record_run(&self, run: &ReconcileRun) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims the reconcile lease for run `holder` until `until`, atomically: `None` when it is now
    /// `holder`'s (it was free, had expired at `now`, or was `holder`'s already), or the lease another
    /// run holds. One run at a time corrects the counters; a run that died frees it by expiring.
    fn claim_reconcile_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<crate::RunLease>, StoreError>> + Send;

    /// Gives the reconcile lease back, if run `holder` still holds it.
    fn release_reconcile_lease(&self, holder: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A usage line that was rejected, kept with its reason (CONTRACTS.md §3, §5).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedLine {
    /// Stable code of the reason (`missing_keyId`, …).
    pub reason: String,
    /// The reason in words.
    pub detail: String,
    /// The log group the line came from.
    pub log_group: String,
    /// The log stream the line came from.
    pub log_stream: String,
    /// The CloudWatch log event id.
    pub log_event_id: String,
    /// The CloudWatch log event's time.
    pub log_timestamp: DateTime<Utc>,
    /// The line itself, cut to [`RejectedLine::MAX_LINE_BYTES`].
    pub line: String,
}

impl RejectedLine {
    /// How much of a rejected line is kept.
    pub const MAX_LINE_BYTES: usize = 16 * 1024;

    /// A rejected line with its reason.
    #[must_use]
    pub fn new(
        reason: RejectReason,
        log_group: &str,
        log_stream: &str,
        log_event_id: &str,
        log_timestamp: DateTime<Utc>,
        line: &str,
    ) -> Self {
        let mut end = line.len().min(Self::MAX_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            reason: reason.code(),
            detail: reason.to_string(),
            log_group: log_group.to_owned(),
            log_stream: log_stream.to_owned(),
            log_event_id: log_event_id.to_owned(),
            log_timestamp,
            line: line[..end].to_owned(),
        }
    }
}

/// The Parquet archive of usage events and the rejects kept beside it (CONTRACTS.md §5).
pub trait ArchiveWriter: Send + Sync {
    /// Writes events of one UTC day as one file called `name` under that day's partition, replacing
    /// a file of the same name (writers name files after their content, so a rewrite is identical).
    /// Returns where the file is.
    fn write_events(
        &self,
        day: Day,
        name: &str,
        events: &[UsageEvent<'_>],
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Writes rejected lines of one UTC day (by log event time) under `rejects/`. Returns where.
    fn write_rejects(
        &self,
        day: Day,
        name: &str,
        rejects: &[RejectedLine],
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// Where archive files go: a local directory or a bucket. The archive's layout and formats are the
/// same on both (`meter_archive::Archive`); only putting bytes at a relative path differs.
pub trait ObjectSink: Send + Sync {
    /// Writes `bytes` at `relative` (replacing what is there) and returns the full location.
    fn put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// Reading back what an [`ObjectSink`] holds: what reconcile and reports need of the archive.
pub trait ObjectSource: Send + Sync {
    /// The files directly or indirectly under the folder `relative` (no trailing `/`), as paths
    /// relative to the root, sorted. A folder that does not exist holds no files.
    fn list(&self, relative: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The bytes of the file at `relative`; [`StoreError::NotFound`] when there is none.
    fn get(&self, relative: &str) -> impl Future<Output = Result<bytes::Bytes, StoreError>> + Send;

    /// The last `len` bytes of the file at `relative` (all of it when it is shorter): a Parquet
    /// footer read without the file (one ranged GET on S3).
    fn get_tail(
        &self,
        relative: &str,
        len: u64,
    ) -> impl Future<Output = Result<bytes::Bytes, StoreError>> + Send;

    /// Writes `bytes` at `relative` only if nothing is there yet; [`StoreError::AlreadyExists`] if
    /// something is (an S3 conditional put, `If-None-Match: *`, or an exclusive link on a local disk).
    fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// The full location of `relative`, for messages and links.
    fn location(&self, relative: &str) -> String;

    /// A link that downloads `relative` for `expires_in`: a presigned GET URL on S3, a `file://` URL
    /// on a local disk (which needs no signature).
    fn download_link(
        &self,
        relative: &str,
        expires_in: std::time::Duration,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// What a query answered: its column names and its rows as text (Athena's result file is CSV).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRows {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows; an empty string stands for SQL NULL.
    pub rows: Vec<Vec<String>>,
    /// Bytes the engine scanned (what Athena bills), when it says.
    pub scanned_bytes: Option<u64>,
}

/// Running SQL over the archive's table on a distributed engine (Athena): the rollup of an archive
/// beyond one machine.
pub trait QueryEngine: Send + Sync {
    /// Runs `sql`, whose `?` placeholders take `parameters` (SQL literals, e.g. `'2026-11-01'`), waits
    /// for it to finish and answers its rows.
    fn run(
        &self,
        sql: &str,
        parameters: &[String],
    ) -> impl Future<Output = Result<QueryRows, StoreError>> + Send;
}

/// Arranging for API Gateway's authorizer caches to be flushed when a rotated key's grace period
/// ends (CONTRACTS.md §9): warm authorizers stop serving the key then on their own; API Gateway's
/// cache needs the same notice a revocation sends, at that moment.
pub trait GraceEndNotifier: Send + Sync {
    /// Schedules the notice for `at`; answers where the schedule is (for messages).
    fn notify_at_grace_end(
        &self,
        key: &KeyId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// Telling the rest of the system that a key was revoked (CONTRACTS.md : an SNS topic whose subscriber
/// flushes API Gateway's authorizer caches).
pub trait RevocationNotifier: Send + Sync {
    /// Announces a revocation.
    fn notify_revoked(&self, revocation: &Revocation) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A secret key that signs short messages and checks their signatures (HMAC-SHA-256), held where it
/// cannot be read out: a KMS HMAC key on AWS. Finance links carry such a signature instead of
/// credentials, so they live as long as they promise.
pub trait MacKey: Send + Sync {
    /// The signature of `message`.
    fn sign(&self, message: &[u8]) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;

    /// Whether `signature` is `message`'s; `Ok(false)` for a wrong one, an error only when the key
    /// could not be asked.
    fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Publishing a message to the people who act on it (the drift alert, the finance notice): an SNS
/// topic on AWS.
pub trait Publisher: Send + Sync {
    /// Publishes `message` with a short `subject`.
    fn publish_message(
        &self,
        subject: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<P: Publisher> Publisher for Option<P> {
    async fn publish_message(&self, subject: &str, message: &str) -> Result<(), StoreError> {
        match self {
            Some(publisher) => publisher.publish_message(subject, message).await,
            None => Ok(()),
        }
    }
}
