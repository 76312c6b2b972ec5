//! The monthly job as a Lambda function, configured from its environment: issues the previous month
//! (or the month the event names, see [`crate::job`]) to S3 and tells finance.

use std::time::Duration;

use meter_lambda::env::{self, ConfigError};
use meter_lambda::runtime::Failure;
use meter_model::{Clock, ObjectSource, SystemClock};
use meter_store::{AnySink, AnyStore, ArchiveLocation, SnsNotifier};

use crate::files::ManifestTotals;
use crate::job::month_to_issue;
use crate::{ArchiveUsage, MAX_LINK_EXPIRY, Pricing, ReportRequest, deliver, issued_report, produce_report};

/// How long download links live unless `METER_LINK_EXPIRY_HOURS` says otherwise.
pub const DEFAULT_LINK_EXPIRY_HOURS: u64 = 72;

/// The job: `METER_STORE`, `METER_ARCHIVE` and `METER_REPORTS` (`s3://…`), `METER_PRICING` (a file
/// bundled with the function, or `s3://bucket/key`), `METER_FINANCE_TOPIC` (SNS topic ARN),
/// `METER_LINK_EXPIRY_HOURS` (default 72, at most 168).
pub struct MonthlyReportFunction {
    store: AnyStore,
    usage: ArchiveUsage<AnySink>,
    reports: AnySink,
    pricing: Pricing,
    pricing_text: String,
    finance: SnsNotifier,
    link_expiry: Duration,
}

impl MonthlyReportFunction {
    /// Reads the configuration, opens the store and the buckets, and reads and checks the pricing.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let archive: ArchiveLocation =
            env::required("METER_ARCHIVE", "the usage archive, e.g. s3://bucket/usage")?.parse()?;
        let reports: ArchiveLocation =
            env::required("METER_REPORTS", "where reports go, e.g. s3://bucket/reports")?.parse()?;
        let pricing_source = env::required("METER_PRICING", "a bundled pricing file or s3://bucket/key")?;
        let topic = env::required("METER_FINANCE_TOPIC", "the SNS topic ARN that finance subscribes to")?;
        let hours = env::parsed("METER_LINK_EXPIRY_HOURS")?.unwrap_or(DEFAULT_LINK_EXPIRY_HOURS);
        let link_expiry = Duration::from_secs(hours.saturating_mul(3600));
        if hours == 0 || link_expiry > MAX_LINK_EXPIRY {
            return Err(env::EnvError::Invalid {
                name: "METER_LINK_EXPIRY_HOURS",
                value: hours.to_string(),
                problem: "links live 1 to 168 hours (7 days, S3's limit)".into(),
            }
            .into());
        }
        let pricing_text = pricing_text(&pricing_source).await?;
        let pricing = Pricing::parse(&pricing_text).map_err(|e| ConfigError::open(pricing_source, e))?;
        let store = AnyStore::from_env().await?;
        let finance = SnsNotifier::for_topic(topic).await;
        Ok(Self {
            store,
            usage: ArchiveUsage::new(AnySink::open(&archive).await),
            reports: AnySink::open(&reports).await,
            pricing,
            pricing_text,
            finance,
            link_expiry,
        })
    }

    /// Issues the month the event names and delivers it; answers the totals. With `"resendLinks":
    /// true` the month, issued before, is not issued again: its links are signed afresh and sent.
    pub async fn handle(&self, event: serde_json::Value) -> Result<ManifestTotals, Failure> {
        let month = month_to_issue(&event, SystemClock.now()).map_err(|err| Failure::permanent(&err))?;
        if event.get("resendLinks").and_then(serde_json::Value::as_bool) == Some(true) {
            let issued = issued_report(&self.reports, month)
                .await
                .map_err(|err| Failure::new(&err, err.is_retryable()))?;
            let message = deliver(&self.reports, &issued, &self.finance, self.link_expiry)
                .await
                .map_err(|err| Failure::new(&err, err.is_retryable()))?;
            tracing::info!(%month, "links sent again");
            return Ok(message.totals);
        }
        let request = ReportRequest { month, draft: false, adjust_months: 3 };
        let outcome = produce_report(
            &self.usage,
            &self.store,
            &self.reports,
            &self.pricing,
            &self.pricing_text,
            &SystemClock,
            &request,
        )
        .await
        .map_err(|err| Failure::new(&err, err.is_retryable()))?;
        let message = deliver(&self.reports, &outcome, &self.finance, self.link_expiry)
            .await
            .map_err(|err| Failure::new(&err, err.is_retryable()))?;
        tracing::info!(%month, invoices = message.totals.invoices, "issued and delivered");
        Ok(message.totals)
    }
}

/// The pricing file's text, from a path or an S3 object.
async fn pricing_text(source: &str) -> Result<String, ConfigError> {
    let bytes = match source.strip_prefix("s3://").and_then(|_| source.rsplit_once('/')) {
        Some((folder, name)) => AnySink::open(&folder.parse()?)
            .await
            .get(name)
            .await
            .map_err(|e| ConfigError::open(source, e))?
            .to_vec(),
        None => std::fs::read(source).map_err(|e| ConfigError::open(source, e))?,
    };
    String::from_utf8(bytes).map_err(|e| ConfigError::open(source, e))
}
