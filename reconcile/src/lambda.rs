//! The nightly reconcile job as a Lambda function, configured from its environment and invoked by an
//! EventBridge schedule (or by hand for a backfill; see [`crate::job`]).

use meter_model::{Clock, ReconcileRun, SystemClock};
use meter_store::env::{self, ConfigError};
use meter_store::lambda::Failure;
use meter_store::{AnySink, AnyStore, ArchiveLocation, SnsNotifier};

use crate::job::{DEFAULT_LOOKBACK_DAYS, days_to_reconcile};
use crate::{ReconcileOptions, reconcile};

/// The job: `METER_STORE`, `METER_ARCHIVE` (`s3://bucket/prefix`), `METER_RECONCILE_LOOKBACK_DAYS`
/// (default 3), and optionally `METER_ALERT_TOPIC` and `METER_DRIFT_ALERT_THRESHOLD`.
pub struct ReconcileFunction {
    store: AnyStore,
    archive: AnySink,
    alerts: Option<SnsNotifier>,
    lookback_days: u32,
    alert_threshold: Option<u128>,
}

impl ReconcileFunction {
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
        let store = AnyStore::from_env().await?;
        Ok(Self { store, archive: AnySink::open(&archive).await, alerts, lookback_days, alert_threshold })
    }

    /// One run over the days the event names; answers the run's record.
    pub async fn handle(&self, event: serde_json::Value) -> Result<ReconcileRun, Failure> {
        let (from, to) = days_to_reconcile(&event, SystemClock.now(), self.lookback_days)
            .map_err(|err| Failure::permanent(&err))?;
        let options = ReconcileOptions { from, to, dry_run: false, alert_threshold: self.alert_threshold };
        let report = reconcile(&self.store, &self.archive, &self.alerts, &SystemClock, &options, |_, _| {})
            .await
            .map_err(|err| Failure::new(&err, err.is_retryable()))?;
        tracing::info!(
            run_id = %report.run.run_id,
            %from,
            %to,
            items_corrected = report.run.items_corrected,
            total_abs_drift = %report.run.total_abs_drift,
            orphan_events = report.run.orphan_events,
            "reconciled"
        );
        Ok(report.run)
    }
}
