//! Lambda: the monthly job. Issues the previous month's invoices to S3 and tells finance.
//!
//! Configuration (environment): `METER_STORE`, `METER_ARCHIVE` and `METER_REPORTS` (`s3://…`),
//! `METER_PRICING` (a file path bundled with the function, or `s3://bucket/key`), `METER_FINANCE_TOPIC`
//! (SNS topic ARN), `METER_LINK_EXPIRY_HOURS` (default 72, at most 168), the standard AWS settings,
//! `METER_LOG`.

use std::time::Duration;

use anyhow::Context;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_model::{Clock, SystemClock};
use meter_reports::job::month_to_issue;
use meter_reports::{ArchiveUsage, Pricing, ReportRequest, deliver, produce_report};
use meter_store::archive::{AnySink, ObjectSource};
use meter_store::{AnyStore, ArchiveLocation, SnsNotifier, StoreConfig, load_aws_config};

fn required(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

/// The pricing file's text, from a path or an S3 object.
async fn pricing_text(source: &str) -> anyhow::Result<String> {
    if source.starts_with("s3://") {
        let (folder, name) = source.rsplit_once('/').context("METER_PRICING s3:// needs a key")?;
        let location: ArchiveLocation = folder.parse()?;
        let bytes = AnySink::open(&location).await.get(name).await?;
        return String::from_utf8(bytes.to_vec()).context("the pricing file is not UTF-8");
    }
    std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    meter_store::lambda::init_logging();
    let store = AnyStore::open(&StoreConfig::from_env()?).await?;
    let archive = AnySink::open(&required("METER_ARCHIVE")?.parse()?).await;
    let reports = AnySink::open(&required("METER_REPORTS")?.parse()?).await;
    let text = pricing_text(&required("METER_PRICING")?).await?;
    let pricing = Pricing::parse(&text)?;
    let finance =
        SnsNotifier::new(meter_store::sns_client(&load_aws_config().await), required("METER_FINANCE_TOPIC")?);
    let hours: u64 = match std::env::var("METER_LINK_EXPIRY_HOURS") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("METER_LINK_EXPIRY_HOURS={text:?} is not a number"))?,
        Err(_) => 72,
    };
    if hours == 0 || hours > 168 {
        return Err(format!(
            "METER_LINK_EXPIRY_HOURS={hours}: links live 1 to 168 hours (7 days, S3's limit)"
        )
        .into());
    }
    let expiry = Duration::from_secs(hours * 3600);
    let usage = ArchiveUsage::new(archive);
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (usage, store, reports, pricing, text, finance) =
            (&usage, &store, &reports, &pricing, &text, &finance);
        async move {
            let month = month_to_issue(&event.payload, SystemClock.now())?;
            let request = ReportRequest { month, draft: false, adjust_months: 3 };
            let outcome = produce_report(usage, store, reports, pricing, text, &SystemClock, &request)
                .await
                .map_err(|e| Error::from(format!("{:#}", anyhow::Error::from(e))))?;
            let message = deliver(reports, &outcome, finance, expiry)
                .await
                .map_err(|e| Error::from(format!("{:#}", anyhow::Error::from(e))))?;
            tracing::info!(month = %month, invoices = message.totals.invoices, "issued and delivered");
            Ok::<_, Error>(serde_json::to_value(&message.totals)?)
        }
    }))
    .await
}
