//! Delivering an issued month to finance: one message on a topic with the totals and a download link
//! for every file of the report.

use std::time::Duration;

use meter_model::ObjectSource;
use meter_model::{Publisher, StoreError};
use serde::Serialize;

use crate::files::ManifestTotals;
use crate::issue::{MANIFEST, ReportOutcome};

/// The longest a presigned S3 link can live (SigV4).
pub const MAX_LINK_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The expiry is zero or longer than S3 allows.
    #[error("link expiry of {0:?} is not between 1 second and 7 days")]
    Expiry(Duration),
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
    /// Every file of the report, the manifest last.
    pub files: Vec<Link>,
}

/// Publishes the report's totals and links to `publisher`; returns the message sent.
pub async fn deliver<R: ObjectSource, P: Publisher>(
    reports: &R,
    outcome: &ReportOutcome,
    publisher: &P,
    expires_in: Duration,
) -> Result<DeliveryMessage, DeliveryError> {
    if expires_in.is_zero() || expires_in > MAX_LINK_EXPIRY {
        return Err(DeliveryError::Expiry(expires_in));
    }
    let manifest = outcome.manifest();
    let mut files = Vec::with_capacity(manifest.files.len() + 1);
    let entries = manifest.files.iter().map(|f| (f.name.as_str(), Some(f.sha256.clone())));
    for (name, sha256) in entries.chain([(MANIFEST, None)]) {
        let path = format!("{}/{name}", outcome.folder());
        let url = reports.download_link(&path, expires_in).await.map_err(|source| DeliveryError::Store {
            during: format!("signing a link to {}", reports.location(&path)),
            source,
        })?;
        files.push(Link { name: name.to_owned(), sha256, url });
    }
    let message = DeliveryMessage {
        kind: "INVOICES_ISSUED",
        period: manifest.period.to_string(),
        currency: manifest.currency.clone(),
        totals: manifest.totals.clone(),
        links_expire_in_seconds: expires_in.as_secs(),
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
