//! The monthly job as a Lambda function, configured from its environment: issues the previous month
//! (or the month the event names, see [`crate::job`]) to S3 and tells finance. And `report-links`,
//! the function URL behind the finance message's signed links ([`crate::links`]).

use std::collections::BTreeMap;
use std::time::Duration;

use meter_lambda::env::{self, ConfigError};
use meter_lambda::runtime::Failure;
use meter_model::{Clock, MacKey, ObjectSource, SystemClock};
use meter_store::{AnySink, AnyStore, ArchiveLocation, KmsMacKey, SnsNotifier};
use serde::{Deserialize, Serialize};

use crate::files::ManifestTotals;
use crate::issue::ReportOutcome;
use crate::job::month_to_issue;
use crate::links::{DownloadLinks, LinkAnswer, LinkRequest, PresignedLinks, SignedLinks, open_link};
use crate::{
    ArchiveUsage, DeliveryError, DeliveryMessage, Pricing, ReportRequest, deliver, issued_report,
    produce_report,
};

/// How long download links live unless `METER_LINK_EXPIRY_HOURS` says otherwise.
pub const DEFAULT_LINK_EXPIRY_HOURS: u64 = 72;

/// The job: `METER_STORE`, `METER_ARCHIVE` and `METER_REPORTS` (`s3://…`), `METER_PRICING` (a file
/// bundled with the function, or `s3://bucket/key`), `METER_FINANCE_TOPIC` (SNS topic ARN),
/// `METER_LINKS_URL` and `METER_LINKS_KEY` (signed links: the `report-links` function URL and the
/// KMS HMAC key; without them links are presigned), `METER_LINK_EXPIRY_HOURS` (default 72, at most
/// 744 for signed links, 168 for presigned ones).
pub struct MonthlyReportFunction {
    store: AnyStore,
    usage: ArchiveUsage<AnySink>,
    reports: AnySink,
    pricing: Pricing,
    pricing_text: String,
    finance: SnsNotifier,
    signed_links: Option<SignedLinks<KmsMacKey>>,
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
        let signed_links = signed_links_from_env().await?;
        let reports = AnySink::open(&reports).await;
        let hours = env::parsed("METER_LINK_EXPIRY_HOURS")?.unwrap_or(DEFAULT_LINK_EXPIRY_HOURS);
        let link_expiry = Duration::from_secs(hours.saturating_mul(3600));
        let allowed = match &signed_links {
            Some(links) => links.max_expiry(),
            None => PresignedLinks(&reports).max_expiry(),
        };
        if hours == 0 || link_expiry > allowed {
            return Err(env::EnvError::Invalid {
                name: "METER_LINK_EXPIRY_HOURS",
                value: hours.to_string(),
                problem: format!("these links live 1 to {} hours", allowed.as_secs() / 3600),
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
            reports,
            pricing,
            pricing_text,
            finance,
            signed_links,
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
            let message =
                self.deliver(&issued).await.map_err(|err| Failure::new(&err, err.is_retryable()))?;
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
        let message = self.deliver(&outcome).await.map_err(|err| Failure::new(&err, err.is_retryable()))?;
        tracing::info!(%month, invoices = message.totals.invoices, "issued and delivered");
        Ok(message.totals)
    }
}

impl MonthlyReportFunction {
    async fn deliver(&self, outcome: &ReportOutcome) -> Result<DeliveryMessage, DeliveryError> {
        let now = SystemClock.now();
        match &self.signed_links {
            Some(links) => deliver(links, outcome, &self.finance, self.link_expiry, now).await,
            None => {
                deliver(&PresignedLinks(&self.reports), outcome, &self.finance, self.link_expiry, now).await
            }
        }
    }
}

/// Signed links when `METER_LINKS_URL` and `METER_LINKS_KEY` are both set; neither means presigned
/// links; one alone is a mistake.
async fn signed_links_from_env() -> Result<Option<SignedLinks<KmsMacKey>>, ConfigError> {
    match (env::optional("METER_LINKS_URL"), env::optional("METER_LINKS_KEY")) {
        (Some(url), Some(key)) => Ok(Some(SignedLinks::new(url, KmsMacKey::for_key(key).await))),
        (None, None) => Ok(None),
        (Some(_), None) => {
            Err(env::EnvError::Missing { name: "METER_LINKS_KEY", hint: "the KMS HMAC key that signs links" }
                .into())
        }
        (None, Some(_)) => Err(env::EnvError::Missing {
            name: "METER_LINKS_URL",
            hint: "the report-links function URL that signed links point at",
        }
        .into()),
    }
}

/// `report-links`: the function URL behind signed finance links. `METER_REPORTS` (`s3://…`) and
/// `METER_LINKS_KEY` (the KMS HMAC key).
pub struct ReportLinksFunction {
    key: KmsMacKey,
    reports: AnySink,
}

impl ReportLinksFunction {
    /// Reads the configuration and opens the reports' bucket.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let reports: ArchiveLocation =
            env::required("METER_REPORTS", "where reports are, e.g. s3://bucket/reports")?.parse()?;
        let key = env::required("METER_LINKS_KEY", "the KMS HMAC key that signs links")?;
        Ok(Self { key: KmsMacKey::for_key(key).await, reports: AnySink::open(&reports).await })
    }

    /// Answers one request to the function URL; never fails the invocation (a failed invocation
    /// reaches the browser as a bare 502).
    pub async fn handle(&self, request: FunctionUrlRequest) -> Result<FunctionUrlResponse, Failure> {
        Ok(answer_function_url(&self.key, &self.reports, &request, SystemClock.now()).await)
    }
}

/// What a Lambda function URL sends (payload format 2.0), as far as links need it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionUrlRequest {
    /// The path, with its leading `/`.
    #[serde(default)]
    pub raw_path: String,
    /// The query parameters, decoded.
    #[serde(default)]
    pub query_string_parameters: Option<BTreeMap<String, String>>,
    /// Where the method is.
    #[serde(default)]
    pub request_context: FunctionUrlContext,
}

/// The request's context.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionUrlContext {
    /// The HTTP part.
    #[serde(default)]
    pub http: FunctionUrlHttp,
}

/// The request's HTTP method.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionUrlHttp {
    /// `GET`, `HEAD`, …
    #[serde(default)]
    pub method: String,
}

/// A function URL's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionUrlResponse {
    /// The HTTP status.
    pub status_code: u16,
    /// The headers.
    pub headers: BTreeMap<String, String>,
    /// The body: why, for a refusal.
    pub body: String,
}

/// The answer to `request`: a redirect to the file, or a status with a sentence saying why not.
pub async fn answer_function_url<K: MacKey, R: ObjectSource>(
    key: &K,
    reports: &R,
    request: &FunctionUrlRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> FunctionUrlResponse {
    let param = |name: &str| request.query_string_parameters.as_ref().and_then(|q| q.get(name)).cloned();
    let link = LinkRequest {
        method: request.request_context.http.method.clone(),
        path: request.raw_path.clone(),
        expires: param("expires"),
        signature: param("signature"),
    };
    let mut headers = BTreeMap::from([("cache-control".to_owned(), "no-store".to_owned())]);
    let (status_code, body) = match open_link(key, reports, &link, now).await {
        Ok(LinkAnswer::Redirect { location }) => {
            headers.insert("location".into(), location);
            (302, String::new())
        }
        Ok(LinkAnswer::Refused { status, message }) => (status, message),
        Err(err) if err.is_transient() => {
            tracing::warn!(error = %meter_model::error_chain(&err), "a link could not be answered now");
            headers.insert("retry-after".into(), "5".into());
            (503, "the link cannot be checked right now; try again in a few seconds".to_owned())
        }
        Err(err) => {
            tracing::error!(error = %meter_model::error_chain(&err), "a link could not be answered");
            (500, "the link cannot be answered: the operators have been told".to_owned())
        }
    };
    tracing::info!(path = %link.path, status = status_code, "link");
    if status_code != 302 {
        headers.insert("content-type".into(), "text/plain; charset=utf-8".into());
    }
    FunctionUrlResponse { status_code, headers, body }
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
