//! Download links for an issued month's files.
//!
//! A presigned S3 link dies with the credentials that signed it: a Lambda's role credentials expire
//! within hours, long before the 72 hours the finance message promises. A *signed link* carries no
//! credential: it names the file and its expiry, with an HMAC of both by a key that never leaves KMS,
//! and points at the `report-links` function (a Lambda function URL). The function checks the
//! signature and the expiry on every request and redirects to a presigned link it signs that moment
//! with its own current credentials, valid for [`REDIRECT_EXPIRY`]. Without signed links configured
//! (the embedded default, or a `meter report --resend-links` without `--links-url`), links are
//! presigned as before.
//!
//! Trade-off, against CloudFront signed URLs with a key group: no distribution to deploy and no
//! private key to generate, store and rotate by hand; each download costs one Lambda invocation and
//! one KMS `VerifyMac` (fractions of a cent) and is logged; disabling the HMAC key stops every link.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use meter_model::{MacKey, ObjectSource, StoreError};

/// The longest a presigned S3 link can live (SigV4).
pub const MAX_LINK_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest a signed link may live: a month, long enough for any approval round; `--resend-links`
/// issues fresh ones after that.
pub const MAX_SIGNED_LINK_EXPIRY: Duration = Duration::from_secs(31 * 24 * 3600);

/// How long the presigned link a signed link redirects to works: enough to start the download.
pub const REDIRECT_EXPIRY: Duration = Duration::from_secs(300);

/// What a link is signed over, versioned so that a later format cannot be confused with this one.
fn signed_message(path: &str, expires: i64) -> Vec<u8> {
    format!("meter-link/1\n{path}\n{expires}").into_bytes()
}

/// How the links in a finance message are made.
pub trait DownloadLinks: Send + Sync {
    /// The longest a link may live.
    fn max_expiry(&self) -> Duration;

    /// Whether a link keeps working when the credentials of whoever made it expire.
    fn outlives_credentials(&self) -> bool;

    /// A link that downloads `path` (relative to the reports' root) until `now + expires_in`.
    fn link(
        &self,
        path: &str,
        expires_in: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// Presigned links to the reports' own files (a `file://` URL on a local disk): on S3 they work until
/// their expiry or until the signing credentials expire, whichever is sooner.
#[derive(Debug, Clone, Copy)]
pub struct PresignedLinks<'a, R>(pub &'a R);

impl<R: ObjectSource> DownloadLinks for PresignedLinks<'_, R> {
    fn max_expiry(&self) -> Duration {
        MAX_LINK_EXPIRY
    }

    fn outlives_credentials(&self) -> bool {
        false
    }

    async fn link(
        &self,
        path: &str,
        expires_in: Duration,
        _now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        self.0.download_link(path, expires_in).await
    }
}

/// Links to the `report-links` function at `base_url`, signed with `key`.
#[derive(Debug, Clone)]
pub struct SignedLinks<K> {
    base_url: String,
    key: K,
}

impl<K> SignedLinks<K> {
    /// Links under `base_url` (the function URL; a trailing `/` is ignored), signed with `key`.
    pub fn new(base_url: impl Into<String>, key: K) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Self { base_url, key }
    }
}

impl<K: MacKey> DownloadLinks for SignedLinks<K> {
    fn max_expiry(&self) -> Duration {
        MAX_SIGNED_LINK_EXPIRY
    }

    fn outlives_credentials(&self) -> bool {
        true
    }

    async fn link(&self, path: &str, expires_in: Duration, now: DateTime<Utc>) -> Result<String, StoreError> {
        check_path(path).map_err(|problem| StoreError::Other {
            operation: format!("sign a link to {path}"),
            source: problem.into(),
        })?;
        let expires = now.timestamp().saturating_add(i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX));
        let signature = self.key.sign(&signed_message(path, expires)).await?;
        Ok(format!(
            "{}/{path}?expires={expires}&signature={}",
            self.base_url,
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A report path a link may name: segments of letters, digits, `.`, `-`, `_` and `=`, none of them
/// empty or a dot segment. Such a path reads the same in a URL without escaping.
fn check_path(path: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '=');
    let fine = !path.is_empty()
        && path.split('/').all(|segment| !matches!(segment, "" | "." | "..") && segment.chars().all(allowed));
    if fine { Ok(()) } else { Err(format!("{path:?} is not a report file's path")) }
}

/// A request to the `report-links` function: what the function URL received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkRequest {
    /// The HTTP method.
    pub method: String,
    /// The URL's path, with its leading `/`.
    pub path: String,
    /// The `expires` query parameter.
    pub expires: Option<String>,
    /// The `signature` query parameter.
    pub signature: Option<String>,
}

/// What the function answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAnswer {
    /// 302 to a presigned link, signed now, that works for [`REDIRECT_EXPIRY`].
    Redirect {
        /// The presigned link.
        location: String,
    },
    /// The request is refused: `status` and a sentence saying why and what to do.
    Refused {
        /// 400, 403, 404, 405 or 410.
        status: u16,
        /// Why.
        message: String,
    },
}

impl LinkAnswer {
    fn refused(status: u16, message: impl Into<String>) -> Self {
        Self::Refused { status, message: message.into() }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Redirect { .. } => 302,
            Self::Refused { status, .. } => *status,
        }
    }
}

/// Answers a signed link: checks its signature with `key` and its expiry against `now`, then
/// redirects to a fresh presigned link to the file in `reports`. Errors only when KMS or S3 could not
/// be asked (the function answers 503 or 500).
pub async fn open_link<K: MacKey, R: ObjectSource>(
    key: &K,
    reports: &R,
    request: &LinkRequest,
    now: DateTime<Utc>,
) -> Result<LinkAnswer, StoreError> {
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return Ok(LinkAnswer::refused(
            405,
            format!("{} is not allowed: links are downloaded with GET", request.method),
        ));
    }
    let path = request.path.strip_prefix('/').unwrap_or(&request.path);
    if let Err(problem) = check_path(path) {
        return Ok(LinkAnswer::refused(404, problem));
    }
    let (Some(expires), Some(signature)) = (&request.expires, &request.signature) else {
        return Ok(LinkAnswer::refused(
            403,
            "the link is not signed: use the link from the finance message whole",
        ));
    };
    let (Ok(expires_at), Ok(signature)) = (expires.parse::<i64>(), URL_SAFE_NO_PAD.decode(signature)) else {
        return Ok(LinkAnswer::refused(
            403,
            "the link's signature is malformed: use the link from the finance message whole",
        ));
    };
    if !key.verify(&signed_message(path, expires_at), &signature).await? {
        return Ok(LinkAnswer::refused(
            403,
            "the link's signature does not match: use the link from the finance message whole",
        ));
    }
    // Checked after the signature, so that the time told is the one the link was issued with.
    if now.timestamp() >= expires_at {
        let when = DateTime::<Utc>::from_timestamp(expires_at, 0)
            .map_or_else(|| expires.clone(), |t| t.to_rfc3339());
        return Ok(LinkAnswer::refused(
            410,
            format!("the link expired at {when}; ask for new links (meter report --month M --resend-links)"),
        ));
    }
    match reports.get_tail(path, 1).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            return Ok(LinkAnswer::refused(404, format!("{path} is no longer in the reports bucket")));
        }
        Err(err) => return Err(err),
    }
    Ok(LinkAnswer::Redirect { location: reports.download_link(path, REDIRECT_EXPIRY).await? })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;
    use meter_store::LocalDir;
    use meter_testkit::HmacKey;

    use super::*;

    const FILE: &str = "issued/month=2026-11/invoices.csv";

    fn issued_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
    }

    async fn reports() -> (tempfile::TempDir, LocalDir) {
        let dir = tempfile::tempdir().unwrap();
        let reports = LocalDir::new(dir.path());
        reports.put_new(FILE, b"invoice".to_vec(), "text/csv").await.unwrap();
        (dir, reports)
    }

    /// The request the function gets for `link`.
    fn request_for(link: &str) -> LinkRequest {
        let rest = link.strip_prefix("https://links.example").unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        let param = |name: &str| {
            query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}="))).map(str::to_owned)
        };
        LinkRequest {
            method: "GET".into(),
            path: path.into(),
            expires: param("expires"),
            signature: param("signature"),
        }
    }

    async fn signed(key: &HmacKey, hours: u64) -> LinkRequest {
        let links = SignedLinks::new("https://links.example/", key.clone());
        let link = links.link(FILE, Duration::from_secs(hours * 3600), issued_at()).await.unwrap();
        assert!(
            link.starts_with("https://links.example/issued/month=2026-11/invoices.csv?expires="),
            "{link}"
        );
        request_for(&link)
    }

    #[tokio::test]
    async fn a_signed_link_redirects_until_it_expires_and_is_gone_after() {
        let (_dir, reports) = reports().await;
        let key = HmacKey::new(b"the key");
        let request = signed(&key, 72).await;
        let just_before = issued_at() + chrono::Duration::hours(72) - chrono::Duration::seconds(1);
        let answer = open_link(&key, &reports, &request, just_before).await.unwrap();
        assert_eq!(
            answer,
            LinkAnswer::Redirect { location: reports.download_link(FILE, REDIRECT_EXPIRY).await.unwrap() }
        );
        let at_expiry = issued_at() + chrono::Duration::hours(72);
        let answer = open_link(&key, &reports, &request, at_expiry).await.unwrap();
        assert_eq!(answer.status(), 410, "{answer:?}");
        assert!(format!("{answer:?}").contains("2026-12-05T10:00:00+00:00"), "{answer:?}");
    }

    #[tokio::test]
    async fn a_link_unsigned_altered_or_signed_by_another_key_is_refused() {
        let (_dir, reports) = reports().await;
        let key = HmacKey::new(b"the key");
        let request = signed(&key, 72).await;
        let now = issued_at();
        let refused = |request: LinkRequest| {
            let (key, reports) = (key.clone(), &reports);
            async move { open_link(&key, reports, &request, now).await.unwrap().status() }
        };
        assert_eq!(refused(LinkRequest { signature: None, ..request.clone() }).await, 403);
        assert_eq!(refused(LinkRequest { expires: None, ..request.clone() }).await, 403);
        assert_eq!(refused(LinkRequest { signature: Some("!!".into()), ..request.clone() }).await, 403);
        // A later expiry, or another file of the month, under the same signature.
        let later = request.expires.as_ref().unwrap().parse::<i64>().unwrap() + 3600;
        assert_eq!(refused(LinkRequest { expires: Some(later.to_string()), ..request.clone() }).await, 403);
        let other = "/issued/month=2026-11/manifest.json".to_owned();
        assert_eq!(refused(LinkRequest { path: other, ..request.clone() }).await, 403);
        let forged = signed(&HmacKey::new(b"another key"), 72).await;
        assert_eq!(refused(forged).await, 403);
        assert_eq!(refused(LinkRequest { method: "PUT".into(), ..request.clone() }).await, 405);
        assert_eq!(refused(request).await, 302);
    }

    #[tokio::test]
    async fn paths_outside_the_reports_are_neither_signed_nor_opened() {
        let (_dir, reports) = reports().await;
        let key = HmacKey::new(b"the key");
        let links = SignedLinks::new("https://links.example", key.clone());
        for path in ["", "../keys.parquet", "issued//x", "issued/./x", "a b", "issued/x?y"] {
            assert!(links.link(path, Duration::from_secs(60), issued_at()).await.is_err(), "{path:?}");
            let request =
                LinkRequest { method: "GET".into(), path: format!("/{path}"), ..LinkRequest::default() };
            assert_eq!(
                open_link(&key, &reports, &request, issued_at()).await.unwrap().status(),
                404,
                "{path:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_signed_link_to_a_file_that_is_gone_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let empty = LocalDir::new(dir.path());
        let key = HmacKey::new(b"the key");
        let request = signed(&key, 72).await;
        let answer = open_link(&key, &empty, &request, issued_at()).await.unwrap();
        assert_eq!(answer.status(), 404, "{answer:?}");
    }
}
