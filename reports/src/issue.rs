//! Producing a month's report (CONTRACTS.md §6): a draft for any month, or the issued invoices of a
//! closed month, written once and never overwritten, with adjustments for earlier issued months whose
//! authoritative usage has changed since.
//!
//! Layout under the reports location: `draft/month=YYYY-MM/…` (replaced on every draft) and
//! `issued/month=YYYY-MM/…` (write-once; `manifest.json` is written last, so a report is issued
//! exactly when its manifest exists).

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use meter_archive::{RollupError, rollup, rollup_folder};
use meter_model::{ApiKeyRecord, Clock, KeyStore, Month, StoreError};
use meter_model::{ObjectSink, ObjectSource};
use rust_decimal::Decimal;

use crate::files::{
    EncodeError, Manifest, ManifestInvoice, ManifestPricing, ManifestSource, ManifestTotals, ReportFile,
    encode_report, sha256_hex,
};
use crate::invoice::{Adjustment, KeyDayUsage, MonthInvoices, invoices_for_month};
use crate::pricing::{Pricing, PricingError};

/// The manifest's name.
pub const MANIFEST: &str = "manifest.json";

/// Why a report could not be produced. Nothing of an issued report is overwritten in any case.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The month is not over, or its last day has not been reconciled.
    #[error("{month} cannot be issued yet: {why}")]
    NotClosed {
        /// The month.
        month: Month,
        /// What is missing.
        why: String,
    },
    /// The pricing does not fit the keys (unknown plan) or an issued month's pricing is unreadable.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// The usage could not be computed from the archive.
    #[error("cannot compute {month}'s usage from the archive")]
    Usage {
        /// The month.
        month: Month,
        /// The rollup's error.
        #[source]
        source: RollupError,
    },
    /// Reading or writing the store or the reports location failed.
    #[error("{during}")]
    Store {
        /// What was being done.
        during: String,
        /// The error.
        #[source]
        source: StoreError,
    },
    /// A file could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// An issued file differs from what its manifest (or this issue) says it holds.
    #[error("{location} differs from the issued report: {detail}; issued files are never overwritten")]
    Mismatch {
        /// The file.
        location: String,
        /// How it differs.
        detail: String,
    },
    /// An issued manifest cannot be read.
    #[error("{location} is not a readable manifest")]
    Manifest {
        /// The file.
        location: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl ReportError {
    /// Whether trying again later may succeed without anyone fixing anything: a store or bucket that
    /// was busy or unreachable, or a month whose last day is about to be reconciled.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotClosed { .. } => true,
            Self::Usage { source: RollupError::Source { source, .. }, .. } | Self::Store { source, .. } => {
                source.is_transient()
            }
            Self::Pricing(_)
            | Self::Usage { .. }
            | Self::Encode(_)
            | Self::Mismatch { .. }
            | Self::Manifest { .. } => false,
        }
    }
}

fn store_failed(during: impl Into<String>) -> impl FnOnce(StoreError) -> ReportError {
    let during = during.into();
    move |source| ReportError::Store { during, source }
}

/// Where a month's authoritative usage comes from.
pub trait UsageSource: Send + Sync {
    /// The month's usage per key and day, and where it was computed from.
    fn month_usage(
        &self,
        month: Month,
    ) -> impl Future<Output = Result<(Vec<KeyDayUsage>, ManifestSource), ReportError>> + Send;

    /// Whether the month's last day has been reconciled (its rollup written by `meter reconcile`).
    fn month_reconciled(&self, month: Month) -> impl Future<Output = Result<bool, ReportError>> + Send;
}

/// The usage of the archive: rollups of the month's days, computed on the spot.
#[derive(Debug)]
pub struct ArchiveUsage<A> {
    archive: A,
}

impl<A: ObjectSource> ArchiveUsage<A> {
    /// Usage from `archive`.
    pub fn new(archive: A) -> Self {
        Self { archive }
    }
}

impl<A: ObjectSource> UsageSource for ArchiveUsage<A> {
    async fn month_usage(&self, month: Month) -> Result<(Vec<KeyDayUsage>, ManifestSource), ReportError> {
        let result = rollup(&self.archive, month.first_day(), month.last_day(), |_, _| {})
            .await
            .map_err(|source| ReportError::Usage { month, source })?;
        let source = ManifestSource {
            archive: self.archive.location(""),
            files_read: result.stats.files,
            rows_read: result.stats.rows,
            distinct_requests: result.stats.distinct,
        };
        let usage = result
            .rows
            .into_iter()
            .map(|row| KeyDayUsage { key_id: row.key_id, day: row.day, tally: row.tally })
            .collect();
        Ok((usage, source))
    }

    async fn month_reconciled(&self, month: Month) -> Result<bool, ReportError> {
        let folder = rollup_folder(month.last_day());
        let files = self.archive.list(&folder).await.map_err(store_failed(format!("listing {folder}")))?;
        Ok(!files.is_empty())
    }
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The month.
    pub month: Month,
    /// A draft (any month, replaced each time) instead of the issued invoices.
    pub draft: bool,
    /// How many earlier issued months are re-checked for adjustments.
    pub adjust_months: u32,
}

/// What a report run did.
#[derive(Debug, Clone)]
pub enum ReportOutcome {
    /// The report was written.
    Written {
        /// Its manifest.
        manifest: Manifest,
        /// The folder it was written to (relative to the reports location).
        folder: String,
        /// Where each file is.
        locations: Vec<String>,
    },
    /// The month was issued before; its files were checked against its manifest and left alone.
    AlreadyIssued {
        /// Its manifest.
        manifest: Manifest,
        /// The folder.
        folder: String,
    },
}

impl ReportOutcome {
    /// The manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        match self {
            Self::Written { manifest, .. } | Self::AlreadyIssued { manifest, .. } => manifest,
        }
    }

    /// The folder, relative to the reports location.
    #[must_use]
    pub fn folder(&self) -> &str {
        match self {
            Self::Written { folder, .. } | Self::AlreadyIssued { folder, .. } => folder,
        }
    }
}

/// The folder of a month's issued report.
#[must_use]
pub fn issued_folder(month: Month) -> String {
    format!("issued/month={month}")
}

/// The folder of a month's draft.
#[must_use]
pub fn draft_folder(month: Month) -> String {
    format!("draft/month={month}")
}

async fn read_manifest<R: ObjectSource>(reports: &R, month: Month) -> Result<Option<Manifest>, ReportError> {
    let path = format!("{}/{MANIFEST}", issued_folder(month));
    match reports.get(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ReportError::Manifest { location: reports.location(&path), source }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_failed(format!("reading {}", reports.location(&path)))(e)),
    }
}

/// An issued month, read back: its manifest, with every file checked against it. For sending its
/// links again (presigned links die with the credentials that signed them). [`ReportError::NotClosed`]
/// when the month has not been issued.
pub async fn issued_report<R: ObjectSource>(reports: &R, month: Month) -> Result<ReportOutcome, ReportError> {
    issued(reports, month).await?.ok_or_else(|| ReportError::NotClosed {
        month,
        why: format!("it has not been issued to {}", reports.location(&issued_folder(month))),
    })
}

/// The month's issued report, its files checked against its manifest; `None` when it is not issued.
async fn issued<R: ObjectSource>(reports: &R, month: Month) -> Result<Option<ReportOutcome>, ReportError> {
    let folder = issued_folder(month);
    let Some(manifest) = read_manifest(reports, month).await? else { return Ok(None) };
    verify(reports, &folder, &manifest).await?;
    Ok(Some(ReportOutcome::AlreadyIssued { manifest, folder }))
}

/// Checks every file an issued manifest lists against its SHA-256.
async fn verify<R: ObjectSource>(reports: &R, folder: &str, manifest: &Manifest) -> Result<(), ReportError> {
    for file in &manifest.files {
        let path = format!("{folder}/{}", file.name);
        let bytes =
            reports.get(&path).await.map_err(store_failed(format!("reading {}", reports.location(&path))))?;
        let actual = sha256_hex(&bytes);
        if actual != file.sha256 {
            return Err(ReportError::Mismatch {
                location: reports.location(&path),
                detail: format!("sha256 {actual}, the manifest says {}", file.sha256),
            });
        }
    }
    Ok(())
}

/// The issued months before `month`, newest first, at most `limit`.
async fn issued_before<R: ObjectSource>(
    reports: &R,
    month: Month,
    limit: u32,
) -> Result<Vec<Month>, ReportError> {
    let listed = reports.list("issued").await.map_err(store_failed("listing issued reports"))?;
    let mut months: Vec<Month> = listed
        .iter()
        .filter_map(|path| {
            path.strip_prefix("issued/month=")?.strip_suffix(&format!("/{MANIFEST}"))?.parse().ok()
        })
        .filter(|m| *m < month)
        .collect();
    months.sort_unstable_by(|a, b| b.cmp(a));
    months.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(months)
}

/// Adjustments for earlier issued months: re-priced with the pricing they were issued with, against
/// what they and the adjustments issued since have billed.
async fn adjustments<U: UsageSource, R: ObjectSource>(
    usage: &U,
    reports: &R,
    keys: &[ApiKeyRecord],
    month: Month,
    limit: u32,
) -> Result<Vec<Adjustment>, ReportError> {
    let earlier = issued_before(reports, month, limit).await?;
    let mut manifests = BTreeMap::new();
    for m in &earlier {
        if let Some(manifest) = read_manifest(reports, *m).await? {
            manifests.insert(*m, manifest);
        }
    }
    let mut out = Vec::new();
    for (period, manifest) in &manifests {
        // What has been billed for `period` so far: its own invoices, plus adjustments issued since.
        let mut billed: BTreeMap<(String, String), (String, i128, Decimal)> = manifest
            .invoices
            .iter()
            .map(|i| {
                (
                    (i.customer_email.clone(), i.plan.clone()),
                    (i.invoice_id.clone(), i128::from(i.successful_calls), i.amount_for_period),
                )
            })
            .collect();
        for later in manifests.range(period.succ()..).map(|(_, m)| m) {
            for a in later.adjustments.iter().filter(|a| a.period == *period) {
                let entry = billed
                    .entry((a.customer_email.clone(), a.plan.clone()))
                    .or_insert_with(|| (a.invoice_id.clone(), 0, Decimal::ZERO));
                entry.1 += i128::from(a.successful_calls_delta);
                entry.2 += a.amount_delta;
            }
        }
        let pricing = Pricing::parse(&manifest.pricing.toml)?;
        let (period_usage, _) = usage.month_usage(*period).await?;
        let now = invoices_for_month(*period, &period_usage, keys, &pricing)?;
        let mut current: BTreeMap<(String, String), (i128, Decimal)> = BTreeMap::new();
        for invoice in &now.invoices {
            current.insert(
                (invoice.customer_email.clone(), invoice.plan.clone()),
                (i128::from(invoice.tally.successful_calls), invoice.amount),
            );
        }
        let mut pairs: Vec<&(String, String)> = billed.keys().chain(current.keys()).collect();
        pairs.sort_unstable();
        pairs.dedup();
        for pair in pairs {
            let (invoice_id, billed_calls, billed_amount) = billed
                .get(pair)
                .cloned()
                .unwrap_or_else(|| (crate::invoice::invoice_id(*period, &pair.0, &pair.1), 0, Decimal::ZERO));
            let (calls, amount) = current.get(pair).copied().unwrap_or((0, Decimal::ZERO));
            let (calls_delta, amount_delta) = (calls - billed_calls, amount - billed_amount);
            if calls_delta != 0 || !amount_delta.is_zero() {
                out.push(Adjustment {
                    period: *period,
                    invoice_id,
                    customer_email: pair.0.clone(),
                    plan: pair.1.clone(),
                    successful_calls_delta: i64::try_from(calls_delta).unwrap_or(i64::MAX),
                    amount_delta,
                });
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)] // the manifest gathers every input of the report
fn manifest_of(
    month: &MonthInvoices,
    pricing: &Pricing,
    pricing_text: &str,
    source: ManifestSource,
    files: &[ReportFile],
    adjustments: Vec<Adjustment>,
    status: &str,
    computed_at: DateTime<Utc>,
) -> Manifest {
    let adjusted: Decimal = adjustments.iter().map(|a| a.amount_delta).sum();
    let tally = month.total_tally();
    let invoices = month
        .invoices
        .iter()
        .map(|i| {
            let carried: Decimal = i.lines.iter().filter(|l| l.kind == "adjustment").map(|l| l.amount).sum();
            ManifestInvoice {
                invoice_id: i.invoice_id.clone(),
                customer_email: i.customer_email.clone(),
                plan: i.plan.clone(),
                successful_calls: i.tally.successful_calls,
                amount_for_period: pricing.in_minor_units(i.amount - carried),
            }
        })
        .collect();
    Manifest {
        period: month.period,
        status: status.to_owned(),
        computed_at,
        currency: pricing.currency.clone(),
        source,
        pricing: ManifestPricing {
            sha256: sha256_hex(pricing_text.as_bytes()),
            toml: pricing_text.to_owned(),
        },
        totals: ManifestTotals {
            invoices: month.invoices.len() as u64,
            successful_calls: tally.successful_calls,
            failed_calls: tally.failed_calls,
            usage_count: tally.usage_count,
            amount: pricing.in_minor_units(month.total_amount()),
            adjustments: pricing.in_minor_units(adjusted),
            unattributed_usage_count: month.unattributed.iter().map(|u| u.tally.usage_count).sum(),
        },
        files: files.iter().map(ReportFile::manifest_entry).collect(),
        invoices,
        adjustments,
    }
}

/// Writes an issued file once: an existing file is left alone, and is accepted only if it holds
/// exactly these bytes (an issue interrupted before its manifest, then run again).
async fn put_once<R: ObjectSource>(
    reports: &R,
    path: &str,
    bytes: Vec<u8>,
    kind: &'static str,
) -> Result<String, ReportError> {
    let digest = sha256_hex(&bytes);
    match reports.put_new(path, bytes, kind).await {
        Ok(location) => Ok(location),
        Err(StoreError::AlreadyExists { .. }) => {
            let existing = reports
                .get(path)
                .await
                .map_err(store_failed(format!("reading {}", reports.location(path))))?;
            if sha256_hex(&existing) == digest {
                Ok(reports.location(path))
            } else {
                Err(ReportError::Mismatch {
                    location: reports.location(path),
                    detail: "a file of that name exists with other contents (an earlier, interrupted issue?)"
                        .into(),
                })
            }
        }
        Err(e) => Err(store_failed(format!("writing {}", reports.location(path)))(e)),
    }
}

/// Produces the report `request` asks for. An issued month is written once; asking again verifies it.
pub async fn produce_report<U, K, R, C>(
    usage: &U,
    keys: &K,
    reports: &R,
    pricing: &Pricing,
    pricing_text: &str,
    clock: &C,
    request: &ReportRequest,
) -> Result<ReportOutcome, ReportError>
where
    U: UsageSource,
    K: KeyStore,
    R: ObjectSource + ObjectSink,
    C: Clock,
{
    let month = request.month;
    let now = clock.now();
    if !request.draft {
        if let Some(issued) = issued(reports, month).await? {
            return Ok(issued);
        }
        if Month::of(now) <= month {
            return Err(ReportError::NotClosed {
                month,
                why: "the month is not over (use --draft for a preview)".into(),
            });
        }
        if !usage.month_reconciled(month).await? {
            return Err(ReportError::NotClosed {
                month,
                why: format!(
                    "its last day, {}, has not been reconciled; run `meter reconcile --from {} --to {}` first",
                    month.last_day(),
                    month.last_day(),
                    month.last_day()
                ),
            });
        }
    }
    let key_records = keys.list_keys().await.map_err(store_failed("listing keys"))?;
    let (month_usage, source) = usage.month_usage(month).await?;
    let mut invoices = invoices_for_month(month, &month_usage, &key_records, pricing)?;
    let adjustments = adjustments(usage, reports, &key_records, month, request.adjust_months).await?;
    invoices.add_adjustments(&adjustments, &pricing.currency);
    let files = encode_report(&invoices, pricing)?;
    let status = if request.draft { "draft" } else { "issued" };
    let manifest = manifest_of(&invoices, pricing, pricing_text, source, &files, adjustments, status, now);
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ReportError::Manifest { location: MANIFEST.into(), source: e })?;
    let folder = if request.draft { draft_folder(month) } else { issued_folder(month) };
    let mut locations = Vec::new();
    for file in files {
        let path = format!("{folder}/{}", file.name);
        locations.push(if request.draft {
            reports
                .put(&path, file.bytes, file.content_type)
                .await
                .map_err(store_failed(format!("writing {}", reports.location(&path))))?
        } else {
            put_once(reports, &path, file.bytes, file.content_type).await?
        });
    }
    // The manifest last: a month is issued exactly when its manifest exists.
    let path = format!("{folder}/{MANIFEST}");
    locations.push(if request.draft {
        reports
            .put(&path, manifest_bytes, "application/json")
            .await
            .map_err(store_failed(format!("writing {}", reports.location(&path))))?
    } else {
        put_once(reports, &path, manifest_bytes, "application/json").await?
    });
    Ok(ReportOutcome::Written { manifest, folder, locations })
}
