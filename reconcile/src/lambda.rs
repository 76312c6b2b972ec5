//! The nightly reconcile job as a Lambda function, configured from its environment and invoked by an
//! EventBridge schedule (or by hand for a backfill; see [`crate::job`]).

use meter_lambda::env::{self, ConfigError};
use meter_lambda::metrics::{MetricLine, Unit};
use meter_lambda::runtime::Failure;
use meter_model::{Clock, ParkedRefresh, ReconcileRun, SystemClock};
use meter_store::{AnySink, AnyStore, ArchiveLocation, SnsNotifier};

use crate::job::{DEFAULT_LOOKBACK_DAYS, Task, task_of};
use crate::{ReconcileOptions, RollupEngine, reconcile_with, recount_keys, refresh_parked};

/// The job: `METER_STORE`, `METER_ARCHIVE` (`s3://bucket/prefix`), `METER_RECONCILE_LOOKBACK_DAYS`
/// (default 3), optionally `METER_ALERT_TOPIC` and `METER_DRIFT_ALERT_THRESHOLD`, and the rollup's
/// engine (`METER_ROLLUP_ENGINE`, see [`RollupEngine::from_env`]).
pub struct ReconcileFunction {
    store: AnyStore,
    archive: AnySink,
    engine: RollupEngine,
    alerts: Option<SnsNotifier>,
    lookback_days: u32,
    alert_threshold: Option<u128>,
}

impl ReconcileFunction {
    /// The name in its metrics.
    pub const NAME: &str = "reconcile-job";

    /// Reads the configuration and opens the store, the archive and the alert topic.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let archive: ArchiveLocation =
            env::required("METER_ARCHIVE", "the usage archive, e.g. s3://bucket/usage")?.parse()?;
        let lookback_days = env::parsed("METER_RECONCILE_LOOKBACK_DAYS")?.unwrap_or(DEFAULT_LOOKBACK_DAYS);
        let alert_threshold = env::parsed("METER_DRIFT_ALERT_THRESHOLD")?;
        let alerts = match env::optional("METER_ALERT_TOPIC") {
            Some(topic) => Some(SnsNotifier::for_topic(topic).await),
            None => None,
        };
        let engine = RollupEngine::from_env().await?;
        let store = AnyStore::from_env().await?;
        let archive = AnySink::open(&archive).await;
        Ok(Self { store, archive, engine, alerts, lookback_days, alert_threshold })
    }

    /// The task the event names: a run over its days (answering the run's record), a refresh of the
    /// parked usage in the key totals, or a recount of them.
    pub async fn handle(&self, event: serde_json::Value) -> Result<serde_json::Value, Failure> {
        let task =
            task_of(&event, SystemClock.now(), self.lookback_days).map_err(|err| Failure::permanent(&err))?;
        let answer = match task {
            Task::Reconcile { from, to } => serde_json::to_value(self.reconcile(from, to).await?),
            Task::RefreshParked => {
                let refresh = refresh_parked(&self.store)
                    .await
                    .map_err(|err| Failure::new(&err, err.is_retryable()))?;
                tracing::info!(
                    parked_items = refresh.parked_items,
                    keys_parked = refresh.keys_parked,
                    keys_moved = refresh.keys_moved,
                    "parked usage refreshed in the key totals"
                );
                println!("{}", refresh_metrics(&refresh, SystemClock.now(), Self::NAME).render());
                serde_json::to_value(refresh)
            }
            Task::RecountKeys => {
                let recount =
                    recount_keys(&self.store).await.map_err(|err| Failure::new(&err, err.is_retryable()))?;
                tracing::info!(keys_recounted = recount.keys_recounted, "key totals recounted");
                serde_json::to_value(recount)
            }
        };
        answer.map_err(|err| Failure::permanent(&err))
    }

    async fn reconcile(&self, from: meter_model::Day, to: meter_model::Day) -> Result<ReconcileRun, Failure> {
        let options = ReconcileOptions { from, to, dry_run: false, alert_threshold: self.alert_threshold };
        let rollups = Box::pin(self.engine.rollup(&self.archive, from, to));
        let report =
            reconcile_with(&self.store, &self.archive, rollups, &self.alerts, &SystemClock, &options)
                .await
                .map_err(|err| Failure::new(&err, err.is_retryable()))?;
        tracing::info!(
            run_id = %report.run.run_id,
            %from,
            %to,
            engine = self.engine.name(),
            items_corrected = report.run.items_corrected,
            total_abs_drift = %report.run.total_abs_drift,
            orphan_events = report.run.orphan_events,
            "reconciled"
        );
        println!("{}", run_metrics(&report.run, Self::NAME).render());
        Ok(report.run)
    }
}

/// A parked refresh's figures as one EMF line.
#[must_use]
pub fn refresh_metrics(
    refresh: &ParkedRefresh,
    at: chrono::DateTime<chrono::Utc>,
    function: &str,
) -> MetricLine {
    MetricLine::new(function, at)
        .with("ParkedItemsRead", refresh.parked_items, Unit::Count)
        .with("KeysParked", refresh.keys_parked, Unit::Count)
        .with("KeyTotalsMoved", refresh.keys_moved, Unit::Count)
}

/// A run's figures as one EMF line: the dashboard's drift per run and the drift alarm read these.
#[must_use]
pub fn run_metrics(run: &ReconcileRun, function: &str) -> MetricLine {
    MetricLine::new(function, run.started_at)
        .with("TotalAbsDrift", u64::try_from(run.total_abs_drift).unwrap_or(u64::MAX), Unit::Count)
        .with("ItemsChecked", run.items_checked, Unit::Count)
        .with("ItemsCorrected", run.items_corrected, Unit::Count)
        .with("MissingInRealtime", run.missing_in_realtime, Unit::Count)
        .with("ExtraInRealtime", run.extra_in_realtime, Unit::Count)
        .with("OrphanEvents", run.orphan_events, Unit::Count)
        .with("ItemsFolded", run.items_folded, Unit::Count)
        .with("ItemsClosed", run.items_closed, Unit::Count)
        .with("RunDuration", run.duration_ms, Unit::Milliseconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_drift_becomes_the_metrics_the_alarm_reads() {
        let day = "2026-11-29".parse().unwrap();
        let run = ReconcileRun {
            run_id: "r".into(),
            started_at: meter_model::time::parse_instant("2026-11-30T07:00:00Z").unwrap(),
            duration_ms: 1_200,
            from: day,
            to: day,
            dry_run: false,
            items_checked: 40,
            keys_checked: 10,
            items_corrected: 2,
            keys_corrected: 2,
            total_abs_drift: 7,
            missing_in_realtime: 5,
            extra_in_realtime: 2,
            key_totals_refreshed: 2,
            items_folded: 1,
            items_closed: 30,
            parked_cleared: 1,
            orphan_events: 3,
            conflicts_retried: 0,
        };
        let line: serde_json::Value =
            serde_json::from_str(&run_metrics(&run, ReconcileFunction::NAME).render()).unwrap();
        assert_eq!(line["Function"], "reconcile-job");
        let figures = [
            "TotalAbsDrift",
            "ItemsCorrected",
            "MissingInRealtime",
            "ExtraInRealtime",
            "OrphanEvents",
            "ItemsClosed",
        ]
        .map(|name| line[name].as_u64());
        assert_eq!(figures, [Some(7), Some(2), Some(5), Some(2), Some(3), Some(30)]);
    }
}
