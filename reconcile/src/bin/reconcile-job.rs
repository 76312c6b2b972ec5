//! Lambda: the nightly reconcile job, invoked by an EventBridge schedule (or by hand for a backfill).
//!
//! Configuration (environment): `METER_STORE`, `METER_ARCHIVE` (`s3://bucket/prefix`),
//! `METER_RECONCILE_LOOKBACK_DAYS` (default 3), `METER_ALERT_TOPIC` and `METER_DRIFT_ALERT_THRESHOLD`
//! (optional), the standard AWS settings, `METER_LOG`.

use anyhow::Context;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_model::{Clock, SystemClock};
use meter_reconcile::job::{DEFAULT_LOOKBACK_DAYS, days_to_reconcile};
use meter_reconcile::{ReconcileOptions, reconcile};
use meter_store::archive::AnySink;
use meter_store::{AnyStore, ArchiveLocation, SnsNotifier, StoreConfig, load_aws_config};

fn env_number<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(name) {
        Ok(text) => {
            text.trim().parse().map(Some).map_err(|_| anyhow::anyhow!("{name}={text:?} is not a number"))
        }
        Err(_) => Ok(None),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    meter_store::lambda::init_logging();
    let config = StoreConfig::from_env()?;
    let archive_location: ArchiveLocation = std::env::var("METER_ARCHIVE")
        .context("METER_ARCHIVE is not set (s3://bucket/prefix of the usage archive)")?
        .parse()?;
    let lookback = env_number::<u32>("METER_RECONCILE_LOOKBACK_DAYS")?.unwrap_or(DEFAULT_LOOKBACK_DAYS);
    let alert_threshold = env_number::<u128>("METER_DRIFT_ALERT_THRESHOLD")?;
    let store = AnyStore::open(&config).await?;
    let archive = AnySink::open(&archive_location).await;
    let alerts = match std::env::var("METER_ALERT_TOPIC") {
        Ok(topic) => Some(SnsNotifier::new(meter_store::sns_client(&load_aws_config().await), topic)),
        Err(_) => None,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (store, archive, alerts) = (&store, &archive, &alerts);
        async move {
            let (from, to) = days_to_reconcile(&event.payload, SystemClock.now(), lookback)?;
            let options = ReconcileOptions { from, to, dry_run: false, alert_threshold };
            let report = reconcile(store, archive, alerts, &SystemClock, &options, |_, _| {})
                .await
                .map_err(|e| Error::from(format!("{:#}", anyhow::Error::from(e))))?;
            tracing::info!(
                run_id = %report.run.run_id,
                from = %from,
                to = %to,
                items_corrected = report.run.items_corrected,
                total_abs_drift = %report.run.total_abs_drift,
                orphan_events = report.run.orphan_events,
                "reconciled"
            );
            Ok::<_, Error>(serde_json::to_value(&report.run)?)
        }
    }))
    .await
}
