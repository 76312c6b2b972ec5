//! `meter report`: a month's invoices from the archive, as a draft or issued.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use meter_model::Publisher;
use meter_model::{Clock, KeyStore, Month};
use meter_model::{ObjectSink, ObjectSource};
use meter_reports::{
    ArchiveUsage, DownloadLinks, Pricing, ReportOutcome, ReportRequest, deliver, issued_report,
    produce_report,
};

/// Options of `meter report`.
pub(crate) struct ReportArgs<'a> {
    pub(crate) month: Month,
    pub(crate) pricing: &'a Path,
    pub(crate) draft: bool,
    pub(crate) adjust_months: u32,
}

/// A pricing file, read and checked, with its text (which an issued report keeps).
pub(crate) fn load_pricing(path: &Path) -> anyhow::Result<(Pricing, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the pricing file {}", path.display()))?;
    let pricing = Pricing::parse(&text).with_context(|| format!("{} cannot be used", path.display()))?;
    Ok((pricing, text))
}

pub(crate) async fn report<K, A, R, C>(
    keys: &K,
    archive: A,
    reports: &R,
    clock: &C,
    args: ReportArgs<'_>,
) -> anyhow::Result<String>
where
    K: KeyStore,
    A: ObjectSource,
    R: ObjectSource + ObjectSink,
    C: Clock,
{
    let (pricing, text) = load_pricing(args.pricing)?;
    let request = ReportRequest { month: args.month, draft: args.draft, adjust_months: args.adjust_months };
    let outcome =
        produce_report(&ArchiveUsage::new(archive), keys, reports, &pricing, &text, clock, &request)
            .await
            .with_context(|| format!("no report for {}", args.month))?;
    let manifest = outcome.manifest();
    let totals = &manifest.totals;
    let mut out = String::new();
    let _ = match &outcome {
        ReportOutcome::Written { .. } => {
            writeln!(out, "{} {} report written", manifest.period, manifest.status)
        }
        ReportOutcome::AlreadyIssued { .. } => writeln!(
            out,
            "{} was issued at {}; its {} files match their manifest and were left as they are",
            manifest.period,
            manifest.computed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            manifest.files.len()
        ),
    };
    let _ = writeln!(
        out,
        "  {} invoices, {} {} ({} billable, {} failed, {} calls in all)",
        totals.invoices,
        totals.amount,
        manifest.currency,
        totals.successful_calls,
        totals.failed_calls,
        totals.usage_count
    );
    for adjustment in &manifest.adjustments {
        let _ = writeln!(
            out,
            "  adjustment for {} {} ({}): {:+} billable calls, {} {}",
            adjustment.period,
            adjustment.customer_email,
            adjustment.plan,
            adjustment.successful_calls_delta,
            adjustment.amount_delta,
            manifest.currency
        );
    }
    if totals.unattributed_usage_count > 0 {
        let _ = writeln!(
            out,
            "  unattributed usage (key ids without a key): {} calls, not billed",
            totals.unattributed_usage_count
        );
    }
    let _ = writeln!(out, "  files: {}", reports.location(outcome.folder()));
    Ok(out)
}

/// Collects the message a delivery would publish, for printing it.
#[derive(Default)]
struct Printed(std::sync::Mutex<String>);

impl Publisher for Printed {
    async fn publish_message(&self, _subject: &str, message: &str) -> Result<(), meter_model::StoreError> {
        if let Ok(mut printed) = self.0.lock() {
            printed.push_str(message);
        }
        Ok(())
    }
}

/// `meter report --resend-links`: the issued month's files checked against their manifest, their links
/// made afresh with `links`, and sent to `finance` (or printed).
pub(crate) async fn resend_links<R: ObjectSource, L: DownloadLinks, P: Publisher>(
    reports: &R,
    links: &L,
    month: Month,
    finance: Option<&P>,
    expiry: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<String> {
    let issued = issued_report(reports, month).await.with_context(|| format!("no links for {month}"))?;
    let hours = expiry.as_secs() / 3600;
    let caveat = if links.outlives_credentials() {
        "signed links: they outlive the credentials that made them"
    } else {
        "or until the credentials that signed them expire, if sooner"
    };
    match finance {
        Some(finance) => {
            let message =
                deliver(links, &issued, finance, expiry, now).await.context("the links were not sent")?;
            Ok(format!(
                "{month}: {} links made afresh and sent to finance; they work for {hours} hours ({caveat})\n",
                message.files.len()
            ))
        }
        None => {
            let printed = Printed::default();
            deliver(links, &issued, &printed, expiry, now).await.context("the links were not made")?;
            let body = printed.0.into_inner().unwrap_or_default();
            Ok(format!("{month}: links made afresh; they work for {hours} hours ({caveat})\n{body}\n"))
        }
    }
}
