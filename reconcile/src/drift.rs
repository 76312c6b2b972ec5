//! Drift correction (CONTRACTS.md ): compare the rollups with the day items and set each item that
//! differs to the authoritative counts, conditionally, moving the key's totals in the same
//! transaction. A correction that finds the item moved (the realtime writer added to it meanwhile)
//! re-reads it and tries again, so realtime increments are never lost or doubled by a correction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use meter_archive::{
    EncodeError, KEYS_SNAPSHOT, Rollup, RollupError, RollupWriteError, key_directory_parquet, rollup,
    write_rollups,
};
use meter_lambda::RetryPolicy;
use meter_model::{
    Clock, CorrectionOutcome, CounterCorrector, Day, DayCorrection, KeyId, KeyStore, Publisher, ReconcileRun,
    StoreError, Tally, TallyDelta,
};
use meter_model::{ObjectSink, ObjectSource};
use serde::Serialize;

/// Keys whose corrections are in flight at once (each correction is one small transaction).
const CORRECTION_CONCURRENCY: usize = 16;
/// Re-reads (after a realtime write) and busy retries per correction before the run gives up on it.
const MAX_ATTEMPTS: u32 = 20;
/// How a correction that meets a busy store (throttling, or a transaction conflict with a realtime
/// write on the same key) is retried: 20 retries, 50 ms doubling (with jitter) to 1.6 s.
const BUSY_RETRY: RetryPolicy =
    RetryPolicy::new(MAX_ATTEMPTS + 1, Duration::from_millis(50), Duration::from_millis(1600));

/// What to reconcile and how.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// The first day.
    pub from: Day,
    /// The last day.
    pub to: Day,
    /// Compute and report the drift without writing anything.
    pub dry_run: bool,
    /// Publish an alert when the total absolute drift exceeds this.
    pub alert_threshold: Option<u128>,
}

/// Why a reconcile run failed. Corrections already made stay made (each is atomic and conditional);
/// running again finishes the job.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The rollups could not be computed; nothing was written.
    #[error("cannot compute the rollups")]
    Rollup(#[from] RollupError),
    /// The store failed.
    #[error("store failed during {during}")]
    Store {
        /// What was being done.
        during: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A report could not be encoded.
    #[error("cannot encode a report")]
    Encode(#[from] EncodeError),
    /// Another run holds the reconcile lease; nothing was read or written.
    #[error(
        "another reconcile run ({holder}) is in progress until {until} at the latest; run again when it has finished"
    )]
    AnotherRun {
        /// The run holding the lease.
        holder: String,
        /// When its lease expires.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// An item kept changing under the correction.
    #[error("{key_id} {day}: the day item changed {attempts} times while being corrected; run again")]
    Contended {
        /// The key.
        key_id: String,
        /// The day.
        day: Day,
        /// Attempts made.
        attempts: u32,
    },
}

impl ReconcileError {
    /// Whether running again may succeed without anyone fixing anything: a store that was busy or
    /// unreachable, an item that kept moving. A rollup that cannot read the archive's files (other
    /// than fetching them) needs the files fixed first.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Rollup(RollupError::Source { source, .. }) | Self::Store { source, .. } => {
                source.is_transient()
            }
            Self::Contended { .. } | Self::AnotherRun { .. } => true,
            Self::Rollup(_) | Self::Encode(_) => false,
        }
    }
}

fn store_failed(during: impl Into<String>) -> impl FnOnce(StoreError) -> ReconcileError {
    let during = during.into();
    move |source| ReconcileError::Store { during, source }
}

/// What happened to one difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftAction {
    /// The item was set to the authoritative counts.
    Corrected,
    /// A dry run: it would have been.
    WouldCorrect,
    /// By the time it was corrected the item already held the authoritative counts.
    AlreadyCorrect,
}

/// One (key, day) whose counters differed from the rollup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftLine {
    /// The key.
    pub key_id: KeyId,
    /// The day.
    pub day: Day,
    /// What the item held when the run read it (zero when there was none).
    pub realtime: Tally,
    /// The authoritative counts.
    pub authoritative: Tally,
    /// What was done.
    pub action: DriftAction,
}

impl DriftLine {
    /// authoritative − realtime.
    #[must_use]
    pub fn delta(&self) -> TallyDelta {
        TallyDelta::between(self.realtime, self.authoritative)
    }
}

/// Usage in the archive of a key that has no item (CONTRACTS.md : orphan usage, reported, never counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The key id as the archive holds it.
    pub key_id: String,
    /// The day.
    pub day: Day,
    /// Its usage.
    pub tally: Tally,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct ReconcileReport {
    /// The run's record.
    pub run: ReconcileRun,
    /// Every difference found, sorted by key and day.
    pub drift: Vec<DriftLine>,
    /// Orphan usage.
    pub orphans: Vec<Orphan>,
    /// The rollups the run compared against.
    pub rollup: Rollup,
    /// Where the rollup and drift files were written (none in a dry run).
    pub written: Vec<String>,
    /// Whether the drift alert was published.
    pub alerted: bool,
}

/// Reconciles `options.from..=options.to`: rollups from `archive` (computed on this machine),
/// corrections in `store`, files beside the archive, the run recorded, and an alert through `alerts`
/// when the drift is large.
pub async fn reconcile<S, A, P, C>(
    store: &S,
    archive: &A,
    alerts: &P,
    clock: &C,
    options: &ReconcileOptions,
    progress: impl FnMut(Day, meter_archive::RollupStats),
) -> Result<ReconcileReport, ReconcileError>
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
    P: Publisher,
    C: Clock,
{
    let rollups = rollup(archive, options.from, options.to, progress);
    reconcile_with(store, archive, rollups, alerts, clock, options).await
}

/// [`reconcile`] with the rollups computed elsewhere: `rollups` is awaited first (within the run's
/// time), e.g. [`meter_archive::rollup_on`] Athena for an archive beyond one machine. The drift
/// correction, the files and the run record are the same whatever computed them.
pub async fn reconcile_with<S, A, P, C>(
    store: &S,
    archive: &A,
    rollups: impl Future<Output = Result<Rollup, RollupError>>,
    alerts: &P,
    clock: &C,
    options: &ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError>
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
    P: Publisher,
    C: Clock,
{
    let started_at = clock.now();
    let start = RunStart { id: run_id(started_at)?, at: started_at, began: Instant::now() };
    // One run at a time: two runs correcting the same item would both apply their difference (the
    // second through the re-read of a changed item), and both fold and clear the same parked usage.
    // A dry run writes nothing and takes no lease.
    if !options.dry_run {
        let until = started_at + RUN_LEASE;
        let held = store
            .claim_reconcile_lease(&start.id, started_at, until)
            .await
            .map_err(store_failed("claiming the reconcile lease"))?;
        if let Some(lease) = held {
            return Err(ReconcileError::AnotherRun { holder: lease.holder, until: lease.until });
        }
    }
    let outcome = correct(store, archive, rollups, alerts, options, &start).await;
    if !options.dry_run
        && let Err(err) = store.release_reconcile_lease(&start.id).await
    {
        // It expires by itself; a run starting before then is refused and says until when.
        tracing::warn!(error = %meter_model::error_chain(&err), "cannot release the reconcile lease");
    }
    outcome
}

/// How long a run holds the reconcile lease: longer than the deployed job may run (15 minutes), so
/// that a lease outlives only a run that died.
pub const RUN_LEASE: chrono::Duration = chrono::Duration::minutes(20);

/// What a day holds in the store, and how much of it is open (counted in realtime, not yet
/// reconciled).
#[derive(Debug, Clone, Copy)]
struct Held {
    tally: Tally,
    open: Tally,
}

/// How a run started: its id, its instant, and the monotonic clock its duration is measured on.
struct RunStart {
    id: String,
    at: chrono::DateTime<chrono::Utc>,
    began: Instant,
}

/// The run itself, holding the lease: rollups against the day items, corrections, files, the record.
async fn correct<S, A, P>(
    store: &S,
    archive: &A,
    rollups: impl Future<Output = Result<Rollup, RollupError>>,
    alerts: &P,
    options: &ReconcileOptions,
    start: &RunStart,
) -> Result<ReconcileReport, ReconcileError>
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
    P: Publisher,
{
    // The parked usage is read before the archive is: an entry parked while the rollup runs may hold
    // calls whose rows the rollup does not see yet (the transformer parks before Firehose writes the
    // rows), so it stays parked for the next run instead of being folded into a count that lacks it
    // and deleted.
    // What is folded is named by the instant it was parked before, and the corrections mark it so on
    // each key in their own write: readers stop counting it there, even if the run dies before it
    // clears the parked items (they are cleared by the next run).
    let folded_until = start.at;
    let parked = store
        .parked_usage_until(options.from, options.to, Some(folded_until))
        .await
        .map_err(store_failed("reading parked usage"))?;
    let rollup = rollups.await?;
    for file in &rollup.misplaced {
        tracing::warn!(
            file = %file.file,
            events = file.events,
            first_day = %file.days.0,
            last_day = %file.days.1,
            "events more than a day from their folder; counted on their own day"
        );
    }
    let directory = store.list_keys().await.map_err(store_failed("listing keys"))?;
    let known: HashSet<KeyId> = directory.iter().map(|k| k.id.clone()).collect();
    let items = store.day_items(options.from, options.to).await.map_err(store_failed("reading day items"))?;
    // The realtime view is the day items plus the usage parked beside them; the corrections set the
    // items to the authoritative counts and the parked usage read above is then cleared.
    // Per parked (key, day): its calls, and its latest call, which a fold carries into the item's
    // lastUsed (the item's own, if later, is kept: see below), so a key used only in single calls
    // keeps its lastUsed.
    let mut parked_by: BTreeMap<(KeyId, Day), Tally> = BTreeMap::new();
    let mut latest: BTreeMap<(KeyId, Day), chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for entry in &parked.entries {
        let key = (entry.key_id.clone(), entry.day);
        latest
            .entry(key.clone())
            .and_modify(|at| *at = (*at).max(entry.last_used))
            .or_insert(entry.last_used);
        parked_by.entry(key).or_default().add(entry.tally);
    }

    let mut realtime: BTreeMap<(KeyId, Day), Held> = BTreeMap::new();
    for item in items {
        let key = (item.key_id, item.day);
        if let (Some(at), Some(folded)) = (item.last_used, latest.get_mut(&key)) {
            *folded = (*folded).max(at);
        }
        realtime.insert(key, Held { tally: item.tally, open: item.open });
    }
    let mut orphans = Vec::new();
    let mut pairs: BTreeMap<(KeyId, Day), (Option<Held>, Tally)> = BTreeMap::new();
    for row in &rollup.rows {
        match KeyId::parse(&row.key_id).ok().filter(|id| known.contains(id)) {
            Some(id) => {
                let current = realtime.remove(&(id.clone(), row.day));
                pairs.insert((id, row.day), (current, row.tally));
            }
            None => orphans.push(Orphan { key_id: row.key_id.clone(), day: row.day, tally: row.tally }),
        }
    }
    // Items the archive knows nothing of: phantoms, to be zeroed.
    for ((id, day), current) in realtime {
        pairs.insert((id, day), (Some(current), Tally::default()));
    }
    for key in parked_by.keys() {
        pairs.entry(key.clone()).or_insert((None, Tally::default()));
    }
    let view = |key: &(KeyId, Day), item: Option<Tally>| {
        let mut tally = item.unwrap_or_default();
        tally.add(parked_by.get(key).copied().unwrap_or_default());
        tally
    };
    let keys_checked = pairs.keys().map(|(id, _)| id).collect::<BTreeSet<_>>().len() as u64;
    let items_checked = pairs.len() as u64;
    // A day whose realtime view differs, whose parked usage is to be folded into its item, or whose
    // open usage is to be closed, has its item set. A day with nothing in the archive and only
    // parked usage needs no item: clearing the parked usage corrects it.
    let (mut parked_only, mut corrections) = (Vec::new(), Vec::new());
    for ((key_id, day), (current, target)) in pairs {
        let key = (key_id, day);
        let parked = parked_by.contains_key(&key);
        let (expected, expected_open) = match current {
            Some(held) => (Some(held.tally), held.open),
            None => (None, Tally::default()),
        };
        if expected.is_none() && target.is_zero() {
            if parked {
                parked_only.push(DriftLine {
                    realtime: view(&key, None),
                    key_id: key.0,
                    day,
                    authoritative: target,
                    action: if options.dry_run { DriftAction::WouldCorrect } else { DriftAction::Corrected },
                });
            }
        } else if parked || !expected_open.is_zero() || view(&key, expected) != target {
            let last_used = if parked { latest.get(&key).copied() } else { None };
            corrections.push(DayCorrection {
                key_id: key.0,
                day,
                expected,
                expected_open,
                target,
                at: start.at,
                last_used,
                folded_until: parked.then_some(folded_until),
            });
        }
    }

    let mut written = Vec::new();
    if !options.dry_run {
        written.extend(write_rollups(archive, &rollup.rows, options.from, options.to).await.map_err(
            |err| match err {
                RollupWriteError::Encode(err) => ReconcileError::Encode(err),
                RollupWriteError::Store { path, source } => {
                    ReconcileError::Store { during: format!("writing {path}"), source }
                }
            },
        )?);
        // The analysts' key directory (which customer each key bills to) follows the keys each night.
        let snapshot = key_directory_parquet(&directory)?;
        written.push(
            archive
                .put(KEYS_SNAPSHOT, snapshot, "application/vnd.apache.parquet")
                .await
                .map_err(store_failed(&format!("writing {KEYS_SNAPSHOT}")))?,
        );
    }
    let mut conflicts_retried = 0u64;
    let mut key_totals_refreshed = 0u64;
    let mut items_closed = 0u64;
    let mut drift = Vec::new();
    if options.dry_run {
        drift.extend(
            corrections
                .iter()
                .map(|c| DriftLine {
                    key_id: c.key_id.clone(),
                    day: c.day,
                    realtime: view(&(c.key_id.clone(), c.day), c.expected),
                    authoritative: c.target,
                    action: DriftAction::WouldCorrect,
                })
                .filter(|line| line.realtime != line.authoritative),
        );
        drift.extend(parked_only);
        drift.sort_by(|a, b| (&a.key_id, a.day).cmp(&(&b.key_id, b.day)));
    } else {
        let mut by_key: BTreeMap<KeyId, Vec<DayCorrection>> = BTreeMap::new();
        for correction in corrections {
            by_key.entry(correction.key_id.clone()).or_default().push(correction);
        }
        let results: Vec<Vec<(DriftLine, u32, bool)>> = futures::stream::iter(by_key.into_values())
            .map(|key_corrections| apply_key(store, key_corrections))
            .buffer_unordered(CORRECTION_CONCURRENCY)
            .try_collect()
            .await?;
        for (mut line, retries, orphan) in results.into_iter().flatten() {
            conflicts_retried += u64::from(retries);
            let parked = parked_by.get(&(line.key_id.clone(), line.day));
            if let Some(parked) = parked {
                line.realtime.add(*parked);
            }
            if line.realtime == line.authoritative {
                // Only folded or closed: the realtime view already held the authoritative counts.
                line.action = DriftAction::AlreadyCorrect;
                if parked.is_none() && !orphan {
                    // Closing open usage is the night's routine, not drift: counted, not listed.
                    items_closed += 1;
                    continue;
                }
            }
            if orphan {
                // The key vanished between the listing and the correction: report, never count.
                orphans.push(Orphan {
                    key_id: line.key_id.to_string(),
                    day: line.day,
                    tally: line.authoritative,
                });
            } else {
                drift.push(line);
            }
        }
        drift.extend(parked_only);
        drift.sort_by(|a, b| (&a.key_id, a.day).cmp(&(&b.key_id, b.day)));
        store.clear_parked(&parked.handles).await.map_err(store_failed("clearing parked usage"))?;
        // The corrections moved their keys' totals with their items; what was parked and is now
        // folded leaves the totals' parked share here (CONTRACTS.md §2). Reads every parked item
        // once, whatever the keys' number or age.
        key_totals_refreshed = store
            .refresh_parked_totals()
            .await
            .map_err(store_failed("refreshing the parked usage in the key totals"))?
            .keys_moved;
    }
    let moved: Vec<&DriftLine> = drift.iter().filter(|l| l.action != DriftAction::AlreadyCorrect).collect();
    let run = ReconcileRun {
        run_id: start.id.clone(),
        started_at: start.at,
        duration_ms: u64::try_from(start.began.elapsed().as_millis()).unwrap_or(u64::MAX),
        from: options.from,
        to: options.to,
        dry_run: options.dry_run,
        items_checked,
        keys_checked,
        items_corrected: moved.len() as u64,
        keys_corrected: moved.iter().map(|l| &l.key_id).collect::<BTreeSet<_>>().len() as u64,
        total_abs_drift: moved.iter().map(|l| l.delta().magnitude()).sum(),
        missing_in_realtime: moved
            .iter()
            .map(|l| l.authoritative.usage_count.saturating_sub(l.realtime.usage_count))
            .sum(),
        extra_in_realtime: moved
            .iter()
            .map(|l| l.realtime.usage_count.saturating_sub(l.authoritative.usage_count))
            .sum(),
        key_totals_refreshed,
        items_folded: drift
            .iter()
            .filter(|l| {
                l.action == DriftAction::AlreadyCorrect && parked_by.contains_key(&(l.key_id.clone(), l.day))
            })
            .count() as u64,
        items_closed,
        parked_cleared: if options.dry_run { 0 } else { parked.handles.len() as u64 },
        orphan_events: orphans.iter().map(|o| o.tally.usage_count).sum(),
        conflicts_retried,
    };
    let mut alerted = false;
    if !options.dry_run {
        written.extend(write_drift(archive, &run, &drift, &orphans).await?);
        store.record_run(&run).await.map_err(store_failed("recording the run"))?;
        if options.alert_threshold.is_some_and(|limit| run.total_abs_drift > limit) {
            let subject = format!("meter: drift of {} on {}..{}", run.total_abs_drift, run.from, run.to);
            let message =
                serde_json::json!({ "type": "DRIFT_ALERT", "run": &run, "files": &written }).to_string();
            alerts
                .publish_message(&subject, &message)
                .await
                .map_err(store_failed("publishing the drift alert"))?;
            alerted = true;
        }
    }
    Ok(ReconcileReport { run, drift, orphans, rollup, written, alerted })
}

/// A run id: its start (so ids sort by time) and 32 random bits (so runs started together differ).
fn run_id(started_at: chrono::DateTime<chrono::Utc>) -> Result<String, ReconcileError> {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(|e| ReconcileError::Store {
        during: "choosing a run id".into(),
        source: StoreError::Other { operation: "getrandom".into(), source: e.to_string().into() },
    })?;
    Ok(format!("{}-{}", started_at.format("%Y%m%dT%H%M%S%.3fZ"), hex::encode(random)))
}

/// Applies one correction, re-reading and retrying while the realtime writer moves the item, and
/// backing off while the store is busy (throttling, or a transaction conflict with a realtime write on
/// the same key). Returns the line, the re-reads, and whether the key turned out not to exist.
async fn apply<S: CounterCorrector>(
    store: &S,
    mut correction: DayCorrection,
) -> Result<(DriftLine, u32, bool), ReconcileError> {
    let first_read = correction.expected.unwrap_or_default();
    let authoritative = correction.target;
    let line = |action, correction: &DayCorrection| DriftLine {
        key_id: correction.key_id.clone(),
        day: correction.day,
        realtime: first_read,
        authoritative,
        action,
    };
    let mut rereads = 0u32;
    let mut busy = BUSY_RETRY.pauses();
    while rereads < MAX_ATTEMPTS {
        let outcome = match store.correct_day(&correction).await {
            Ok(outcome) => outcome,
            Err(err) if err.is_retryable() => match busy.next() {
                Some(pause) => {
                    tokio::time::sleep(pause).await;
                    continue;
                }
                None => return Err(store_failed("correcting a day item")(err)),
            },
            Err(err) => return Err(store_failed("correcting a day item")(err)),
        };
        match outcome {
            CorrectionOutcome::Applied => {
                return Ok((line(DriftAction::Corrected, &correction), rereads, false));
            }
            CorrectionOutcome::UnknownKey => {
                return Ok((line(DriftAction::Corrected, &correction), rereads, true));
            }
            CorrectionOutcome::Changed => {
                rereads += 1;
                let now = store
                    .day_item(&correction.key_id, correction.day)
                    .await
                    .map_err(store_failed("re-reading a day item"))?;
                if let Some(at) = now.as_ref().and_then(|item| item.last_used) {
                    correction.last_used = correction.last_used.map(|folded| folded.max(at));
                }
                correction.expected_open = now.as_ref().map(|item| item.open).unwrap_or_default();
                let fresh = now.map(|item| item.tally);
                // The realtime writer added to the item after the archive was rolled up: what it
                // added is newer than the rollup (its events may not be archived yet), so it is kept
                // on top of the authoritative count rather than wiped. The next run settles it
                // against the archive.
                let added =
                    TallyDelta::between(correction.expected.unwrap_or_default(), fresh.unwrap_or_default());
                correction.target = added.applied_to(correction.target);
                correction.expected = fresh;
                if correction.expected == Some(correction.target) {
                    return Ok((line(DriftAction::AlreadyCorrect, &correction), rereads, false));
                }
            }
        }
    }
    Err(ReconcileError::Contended {
        key_id: correction.key_id.to_string(),
        day: correction.day,
        attempts: MAX_ATTEMPTS,
    })
}

/// Applies a key's corrections one after another: they all move the same key item's totals, and
/// concurrent transactions on one item would only conflict with each other.
async fn apply_key<S: CounterCorrector>(
    store: &S,
    corrections: Vec<DayCorrection>,
) -> Result<Vec<(DriftLine, u32, bool)>, ReconcileError> {
    let mut done = Vec::with_capacity(corrections.len());
    for correction in corrections {
        done.push(apply(store, correction).await?);
    }
    Ok(done)
}

#[derive(Serialize)]
struct DriftCsvRow<'a> {
    key_id: &'a str,
    day: Day,
    kind: &'static str,
    action: &'static str,
    realtime_successful_calls: u64,
    realtime_failed_calls: u64,
    realtime_usage_count: u64,
    authoritative_successful_calls: u64,
    authoritative_failed_calls: u64,
    authoritative_usage_count: u64,
}

/// Writes `drift/run=<id>/drift.csv` (every difference and orphan) and `summary.json` (the run).
async fn write_drift<A: ObjectSink>(
    archive: &A,
    run: &ReconcileRun,
    drift: &[DriftLine],
    orphans: &[Orphan],
) -> Result<Vec<String>, ReconcileError> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    let encode = |e: csv::Error| EncodeError::new("CSV", e);
    for line in drift {
        let action = match line.action {
            DriftAction::Corrected => "corrected",
            DriftAction::WouldCorrect => "would_correct",
            DriftAction::AlreadyCorrect => "already_correct",
        };
        csv.serialize(DriftCsvRow {
            key_id: line.key_id.as_str(),
            day: line.day,
            kind: "drift",
            action,
            realtime_successful_calls: line.realtime.successful_calls,
            realtime_failed_calls: line.realtime.failed_calls,
            realtime_usage_count: line.realtime.usage_count,
            authoritative_successful_calls: line.authoritative.successful_calls,
            authoritative_failed_calls: line.authoritative.failed_calls,
            authoritative_usage_count: line.authoritative.usage_count,
        })
        .map_err(encode)?;
    }
    for orphan in orphans {
        csv.serialize(DriftCsvRow {
            key_id: &orphan.key_id,
            day: orphan.day,
            kind: "orphan",
            action: "reported",
            realtime_successful_calls: 0,
            realtime_failed_calls: 0,
            realtime_usage_count: 0,
            authoritative_successful_calls: orphan.tally.successful_calls,
            authoritative_failed_calls: orphan.tally.failed_calls,
            authoritative_usage_count: orphan.tally.usage_count,
        })
        .map_err(encode)?;
    }
    let csv = csv.into_inner().map_err(|e| EncodeError::new("CSV", e.into_error()))?;
    let summary = serde_json::to_vec_pretty(run).map_err(|e| EncodeError::new("JSON", e))?;
    let folder = format!("drift/run={}", run.run_id);
    let mut written = Vec::new();
    for (name, bytes, kind) in [("drift.csv", csv, "text/csv"), ("summary.json", summary, "application/json")]
    {
        let path = format!("{folder}/{name}");
        written.push(archive.put(&path, bytes, kind).await.map_err(store_failed(format!("writing {path}")))?);
    }
    Ok(written)
}
