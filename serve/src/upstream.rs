//! The team's own API behind the gateway (`meter serve --upstream URL`): each allowed request is
//! proxied, and the gateway prints the usage line itself from the upstream's answer. The upstream says
//! a success is not billable with the response header `x-meter-should-count: false` (the header is
//! removed before the client sees the response). Failures are answered as API Gateway answers them.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The response header by which the upstream marks a success as not billable.
pub const SHOULD_COUNT_HEADER: HeaderName = HeaderName::from_static("x-meter-should-count");
/// API Gateway's payload limit: a larger request body is refused with 413.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// API Gateway's integration timeout: a slower upstream is answered 504.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

/// An upstream URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{url:?} is not an upstream: {reason} (use http://HOST:PORT[/PREFIX])")]
pub struct UpstreamError {
    url: String,
    reason: &'static str,
}

/// What came of forwarding a request.
#[derive(Debug)]
pub struct Forwarded {
    /// The response for the client.
    pub response: Response,
    /// The status the usage line reports.
    pub status: u16,
    /// Whether the call is billable if it succeeded.
    pub should_count: bool,
}

/// The upstream and the pooled client that reaches it.
pub struct Upstream {
    base: Uri,
    client: Client<HttpConnector, Body>,
}

impl Upstream {
    /// The upstream at `url` (plain HTTP: it is the team's service on this machine or network).
    pub fn new(url: &str) -> Result<Self, UpstreamError> {
        let fail = |reason| UpstreamError { url: url.to_owned(), reason };
        let base: Uri = url.parse().map_err(|_| fail("not a URL"))?;
        if base.scheme_str() != Some("http") {
            return Err(fail("only http:// is proxied"));
        }
        if base.authority().is_none() {
            return Err(fail("no host"));
        }
        if base.query().is_some() {
            return Err(fail("a query string cannot be a prefix"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Self { base, client: Client::builder(TokioExecutor::new()).build(connector) })
    }

    /// Forwards `request` and answers as API Gateway would when the integration fails.
    pub async fn forward(&self, request: Request) -> Forwarded {
        let (mut parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return refusal(StatusCode::PAYLOAD_TOO_LARGE, r#"{"message":"Request Entity Too Large"}"#);
            }
        };
        let prefix = self.base.path().trim_end_matches('/');
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let Ok(path_and_query) = format!("{prefix}{path}").parse::<PathAndQuery>() else {
            return refusal(StatusCode::BAD_REQUEST, r#"{"message":"Bad Request"}"#);
        };
        let mut target = self.base.clone().into_parts();
        target.path_and_query = Some(path_and_query);
        let Ok(uri) = Uri::from_parts(target) else {
            return refusal(StatusCode::BAD_REQUEST, r#"{"message":"Bad Request"}"#);
        };
        parts.uri = uri;
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::CONNECTION);
        let outgoing = Request::from_parts(parts, Body::from(body));
        match tokio::time::timeout(INTEGRATION_TIMEOUT, self.client.request(outgoing)).await {
            Err(_) => refusal(StatusCode::GATEWAY_TIMEOUT, r#"{"message":"Endpoint request timed out"}"#),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "the upstream cannot be reached");
                refusal(StatusCode::BAD_GATEWAY, r#"{"message":"Internal server error"}"#)
            }
            Ok(Ok(answer)) => {
                let (mut parts, body) = answer.into_parts();
                let should_count = parts
                    .headers
                    .remove(&SHOULD_COUNT_HEADER)
                    .is_none_or(|value| !value.as_bytes().eq_ignore_ascii_case(b"false"));
                let status = parts.status.as_u16();
                Forwarded { response: Response::from_parts(parts, Body::new(body)), status, should_count }
            }
        }
    }
}

/// API Gateway's own answer to a failed integration: a failed call, never billable.
fn refusal(status: StatusCode, body: &'static str) -> Forwarded {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Forwarded { response, status: status.as_u16(), should_count: false }
}
