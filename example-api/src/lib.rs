//! The example API: the smallest backend that shows how a service reports usage to meter.
//!
//! Each request gets an answer from a fixed set of routes ([`Route`]) and produces exactly one usage
//! line (CONTRACTS.md §3), printed by the caller to stdout: that is all a backend has to do. The routes
//! cover each counting rule, so a deployment can be checked end to end (`scripts/test-api-usage`):
//!
//! | request | status | `shouldCount` | billed |
//! |---|---|---|---|
//! | `GET /v1/items/{id}` | 200 | true | yes |
//! | `GET /v1/ping` | 200 | false | no (a health check) |
//! | `GET /v1/missing` | 404 | true | no (failed call) |
//! | `GET /v1/fail` | 500 | true | no (failed call) |
//! | anything else | 404 | true | no (failed call) |

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// A route of the example API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/items/{id}`: a billable success.
    Item,
    /// `GET /v1/ping`: a success the service chooses not to bill (`shouldCount: false`).
    Ping,
    /// `GET /v1/missing`: the client asked for something that is not there (404).
    Missing,
    /// `GET /v1/fail`: the service failed (500).
    Fail,
    /// Any other method or path (404).
    NotFound,
}

impl Route {
    /// The route of a method and path (`/v1/items/42`, not the template).
    #[must_use]
    pub fn of(method: &str, path: &str) -> Self {
        if !method.eq_ignore_ascii_case("GET") {
            return Self::NotFound;
        }
        match path.trim_end_matches('/') {
            "/v1/ping" => Self::Ping,
            "/v1/missing" => Self::Missing,
            "/v1/fail" => Self::Fail,
            other => match other.strip_prefix("/v1/items/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Self::Item,
                _ => Self::NotFound,
            },
        }
    }

    /// The status code the route answers.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::Item | Self::Ping => 200,
            Self::Missing | Self::NotFound => 404,
            Self::Fail => 500,
        }
    }

    /// Whether the service asks for this call to be billed when it succeeds.
    #[must_use]
    pub fn should_count(self) -> bool {
        !matches!(self, Self::Ping)
    }

    /// The resource template reported in the usage line (low-cardinality, unlike the path).
    #[must_use]
    pub fn resource(self) -> &'static str {
        match self {
            Self::Item => "/v1/items/{id}",
            Self::Ping => "/v1/ping",
            Self::Missing => "/v1/missing",
            Self::Fail => "/v1/fail",
            Self::NotFound => "/{proxy+}",
        }
    }

    /// The JSON body of the answer.
    #[must_use]
    pub fn body(self, path: &str) -> Value {
        match self {
            Self::Item => json!({"id": path.rsplit('/').next().unwrap_or_default(), "name": "example item"}),
            Self::Ping => json!({"ok": true}),
            Self::Missing | Self::NotFound => json!({"message": "Not Found"}),
            Self::Fail => json!({"message": "Internal Server Error"}),
        }
    }
}

/// What one request produced: the response for API Gateway and the usage line for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The proxy integration response (`statusCode`, `headers`, `body`).
    pub response: Value,
    /// The usage line to print, or `None` when the request carries no key id (no authorizer in
    /// front): a line without one would only be rejected downstream.
    pub usage_line: Option<String>,
}

/// The usage line of one request to a route of this API (CONTRACTS.md §3), as the backend prints it.
#[must_use]
pub fn usage_line(
    request_id: &str,
    key_id: &str,
    at: DateTime<Utc>,
    route: Route,
    method: &str,
    latency_ms: u64,
) -> String {
    UsageLine {
        request_id,
        key_id,
        at,
        status: route.status(),
        should_count: route.should_count(),
        method,
        resource: route.resource(),
        latency_ms,
    }
    .render()
}

/// The fields of one usage line (CONTRACTS.md §3), for any backend.
#[derive(Debug, Clone, Copy)]
pub struct UsageLine<'a> {
    /// API Gateway's request id.
    pub request_id: &'a str,
    /// The key id from the authorizer's context.
    pub key_id: &'a str,
    /// When the request was answered.
    pub at: DateTime<Utc>,
    /// The status code answered.
    pub status: u16,
    /// Whether the service asks for the call to be billed if it succeeded.
    pub should_count: bool,
    /// The HTTP method.
    pub method: &'a str,
    /// The resource (a route template, or the path when no template is known).
    pub resource: &'a str,
    /// Time to answer, in milliseconds.
    pub latency_ms: u64,
}

impl UsageLine<'_> {
    /// The line as printed: one JSON object.
    #[must_use]
    pub fn render(&self) -> String {
        json!({
            "type": "API_USAGE",
            "requestId": self.request_id,
            "keyId": self.key_id,
            "timestamp": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "statusCode": self.status,
            "shouldCount": self.should_count,
            "method": self.method.to_ascii_uppercase(),
            "resource": self.resource,
            "latencyMs": self.latency_ms,
        })
        .to_string()
    }
}

/// Answers an API Gateway proxy event (REST API payload 1.0 or HTTP API payload 2.0) received at
/// `now`. The key id comes from the authorizer's context (`keyId`), the request id from API Gateway.
#[must_use]
pub fn handle_proxy_event(event: &Value, now: DateTime<Utc>) -> Answer {
    let context = &event["requestContext"];
    let method = event["httpMethod"].as_str().or_else(|| context["http"]["method"].as_str()).unwrap_or("GET");
    let path = event["path"].as_str().or_else(|| event["rawPath"].as_str()).unwrap_or("/");
    // A REST API stage prefixes nothing in `path`; an HTTP API's `rawPath` holds a non-default stage.
    let stage_prefix = context["stage"].as_str().filter(|s| *s != "$default").map(|s| format!("/{s}"));
    let path = stage_prefix.as_deref().and_then(|prefix| path.strip_prefix(prefix)).unwrap_or(path);
    let route = Route::of(method, path);
    let authorizer = &context["authorizer"];
    let key_id = authorizer["keyId"].as_str().or_else(|| authorizer["lambda"]["keyId"].as_str());
    let request_id = context["requestId"].as_str().unwrap_or_default();
    // The gateway's receipt of the request (REST `requestTimeEpoch`, HTTP API `timeEpoch`) to now.
    let received = context["requestTimeEpoch"].as_i64().or_else(|| context["timeEpoch"].as_i64());
    let latency_ms = received.map_or(0, |ms| u64::try_from(now.timestamp_millis() - ms).unwrap_or(0));
    let usage_line = key_id
        .filter(|_| !request_id.is_empty())
        .map(|key_id| usage_line(request_id, key_id, now, route, method, latency_ms));
    let response = json!({
        "statusCode": route.status(),
        "headers": {"content-type": "application/json"},
        "body": route.body(path).to_string(),
    });
    Answer { response, usage_line }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-11-29T14:03:07.123Z".parse().unwrap()
    }

    #[test]
    fn routes_cover_each_counting_rule() {
        let cases = [
            ("GET", "/v1/items/42", Route::Item, 200, true),
            ("GET", "/v1/ping", Route::Ping, 200, false),
            ("GET", "/v1/missing", Route::Missing, 404, true),
            ("GET", "/v1/fail", Route::Fail, 500, true),
            ("POST", "/v1/items/42", Route::NotFound, 404, true),
            ("GET", "/v1/items/", Route::NotFound, 404, true),
            ("GET", "/v1/items/1/2", Route::NotFound, 404, true),
        ];
        for (method, path, route, status, counted) in cases {
            assert_eq!(Route::of(method, path), route, "{method} {path}");
            assert_eq!((route.status(), route.should_count()), (status, counted), "{method} {path}");
        }
    }

    #[test]
    fn a_rest_proxy_event_gets_its_answer_and_one_usage_line() {
        let event: Value =
            serde_json::from_str(include_str!("../tests/fixtures/rest-proxy-event.json")).unwrap();
        let answer = handle_proxy_event(&event, at());
        assert_eq!(answer.response["statusCode"], 200);
        let line: Value = serde_json::from_str(answer.usage_line.as_deref().unwrap()).unwrap();
        assert_eq!(
            line,
            json!({"type": "API_USAGE", "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                   "keyId": "0123456789ab", "timestamp": "2026-11-29T14:03:07.123Z", "statusCode": 200,
                   "shouldCount": true, "method": "GET", "resource": "/v1/items/{id}", "latencyMs": 12})
        );
    }

    #[test]
    fn an_http_api_event_reads_the_lambda_authorizer_context_and_the_stage() {
        let event = json!({
            "version": "2.0", "rawPath": "/prod/v1/fail",
            "requestContext": {"requestId": "r-1", "stage": "prod", "http": {"method": "GET"},
                               "authorizer": {"lambda": {"keyId": "0123456789ab"}}}
        });
        let answer = handle_proxy_event(&event, at());
        assert_eq!(answer.response["statusCode"], 500);
        let line: Value = serde_json::from_str(answer.usage_line.as_deref().unwrap()).unwrap();
        assert_eq!((line["statusCode"].as_u64(), line["resource"].as_str()), (Some(500), Some("/v1/fail")));
    }

    #[test]
    fn no_usage_line_without_a_key_id() {
        let event = json!({"httpMethod": "GET", "path": "/v1/ping", "requestContext": {"requestId": "r-1"}});
        let answer = handle_proxy_event(&event, at());
        assert_eq!((answer.response["statusCode"].as_u64(), answer.usage_line), (Some(200), None));
    }
}
