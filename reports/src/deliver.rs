//! Delivering an issued month to finance: one message on a topic with the totals and a download link
//! for every file of the report.

use std::time::Duration;

use chrono::{DateTime, Utc};
use meter_model::{Publisher, StoreError};
use serde::Serialize;

use crate::files::ManifestTotals;
use crate::issue::{MANIFEST, ReportOutcome};
use crate::links::DownloadLinks;

/// Why delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The expiry is zero or longer than the links allow.
    #[error(
        "link expiry of {} seconds is not between 1 second and {} hours (these links' limit)",
        asked.as_secs(),
        allowed.as_secs() / 3600
    )]
    Expiry {
        /// The expiry asked for.
        asked: Duration,
        /// The longest these links may live.
        allowed: Duration,
    },
    /// Signing a link or publishing failed.
    #[error("{during}")]
    Store {
        /// What was being done.
        during: String,
        /// The error.
        #[source]
        source: StoreError,
    },
}

impl DeliveryError {
    /// Whether trying again may succeed: signing or publishing met a busy or unreachable service.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store { source, .. } if source.is_transient())
    }
}

/// A file and its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The file's name.
    pub name: String,
    /// Its SHA-256 (as in the manifest), to check the download.
    pub sha256: Option<String>,
    /// The link.
    pub url: String,
}

/// The message finance receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryMessage {
    /// `INVOICES_ISSUED`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The month.
    pub period: String,
    /// The currency.
    pub currency: String,
    /// The totals.
    pub totals: ManifestTotals,
    /// How long the links work, in seconds.
    pub links_expire_in_seconds: u64,
    /// When they stop working.
    pub links_expire_at: String,
    /// Whether they work that long whatever happens to the credentials of whoever made them (signed
    /// links); presigned links stop when those credentials expire, if sooner.
    pub links_outlive_credentials: bool,
    /// Every file of the report, the manifest last.
    pub files: Vec<Link>,
}

/// Publishes the report's totals and links to `publisher`; returns the message sent.
pub async fn deliver<L: DownloadLinks, P: Publisher>(
    links: &L,
    outcome: &ReportOutcome,
    publisher: &P,
    expires_in: Duration,
    now: DateTime<Utc>,
) -> Result<DeliveryMessage, DeliveryError> {
    let allowed = links.max_expiry();
    if expires_in.is_zero() || expires_in > allowed {
        return Err(DeliveryError::Expiry { asked: expires_in, allowed });
    }
    let expires_at = chrono::Duration::from_std(expires_in)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or(DeliveryError::Expiry { asked: expires_in, allowed })?;
    let manifest = outcome.manifest();
    let mut files = Vec::with_capacity(manifest.files.len() + 1);
    let entries = manifest.files.iter().map(|f| (f.name.as_str(), Some(f.sha256.clone())));
    for (name, sha256) in entries.chain([(MANIFEST, None)]) {
        let path = format!("{}/{name}", outcome.folder());
        let url = links
            .link(&path, expires_in, now)
            .await
            .map_err(|source| DeliveryError::Store { during: format!("signing a link to {path}"), source })?;
        files.push(Link { name: name.to_owned(), sha256, url });
    }
    let message = DeliveryMessage {
        kind: "INVOICES_ISSUED",
        period: manifest.period.to_string(),
        currency: manifest.currency.clone(),
        totals: manifest.totals.clone(),
        links_expire_in_seconds: expires_in.as_secs(),
        links_expire_at: meter_model::time::format_instant(expires_at),
        links_outlive_credentials: links.outlives_credentials(),
        files,
    };
    let subject = format!(
        "meter: invoices for {} issued ({} invoices, {} {})",
        manifest.period, manifest.totals.invoices, manifest.totals.amount, manifest.currency
    );
    let body = serde_json::to_string_pretty(&message).map_err(|e| DeliveryError::Store {
        during: "rendering the message".into(),
        source: StoreError::Other { operation: "render".into(), source: e.into() },
    })?;
    publisher.publish_message(&subject, &body).await.map_err(|source| DeliveryError::Store {
        during: "publishing to the finance topic".into(),
        source,
    })?;
    Ok(message)
}
