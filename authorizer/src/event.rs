//! API Gateway's authorizer events (REST `TOKEN`, REST `REQUEST`, HTTP API payload 2.0) and the
//! responses each expects.

use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use serde_json::{Map, Value, json};

use crate::decide::{Decision, Grant, QuotaRefusal};

/// An authorizer invocation, reduced to what the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEvent {
    /// REST API, `TOKEN` authorizer.
    RestToken {
        /// The presented key, `Bearer ` removed.
        key: Option<String>,
        /// The invoked method's ARN.
        method_arn: String,
    },
    /// REST API, `REQUEST` authorizer.
    RestRequest {
        /// From the identity source's header (any case; `Bearer ` removed).
        key: Option<String>,
        /// The invoked method's ARN.
        method_arn: String,
    },
    /// HTTP API, payload format 2.0 (simple responses).
    HttpV2 {
        /// From the event's identity source (else the identity source's header).
        key: Option<String>,
    },
}

/// Where API Gateway takes the key from, and so what its authorizer cache is keyed on: the key is
/// read from there and nowhere else. Reading another header as well would let a request whose
/// identity source holds one key be decided on another, and cached under the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySource {
    header: String,
}

impl IdentitySource {
    /// The header API Gateway is configured with (`method.request.header.NAME` for REST,
    /// `$request.header.NAME` for HTTP APIs); matched in any case.
    #[must_use]
    pub fn header(name: &str) -> Self {
        Self { header: name.trim().to_ascii_lowercase() }
    }
}

impl Default for IdentitySource {
    /// `x-api-key`.
    fn default() -> Self {
        Self::header("x-api-key")
    }
}

/// An event that is none of the three.
#[derive(Debug, thiserror::Error)]
#[error("not an API Gateway authorizer event: {0}")]
pub struct EventError(&'static str);

impl AuthEvent {
    /// Reads an event whose identity source is the `x-api-key` header.
    pub fn parse(event: &Value) -> Result<Self, EventError> {
        Self::parse_with(event, &IdentitySource::default())
    }

    /// Reads an event, taking the key from `identity` only.
    pub fn parse_with(event: &Value, identity: &IdentitySource) -> Result<Self, EventError> {
        let text = |name: &str| event.get(name).and_then(Value::as_str);
        if text("version") == Some("2.0") {
            // API Gateway puts the identity source's values here, exactly what it caches on.
            let from_identity = event
                .get("identitySource")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(bearer);
            let key = match from_identity {
                Some(key) => Some(key),
                None => header_key(event.get("headers"), identity),
            };
            return Ok(Self::HttpV2 { key: key.filter(|k| !k.is_empty()).map(str::to_owned) });
        }
        let method_arn = text("methodArn").ok_or(EventError("methodArn is missing"))?.to_owned();
        match text("type") {
            Some("TOKEN") => Ok(Self::RestToken {
                key: text("authorizationToken").map(|t| bearer(t).to_owned()),
                method_arn,
            }),
            Some("REQUEST") => Ok(Self::RestRequest {
                key: header_key(event.get("headers"), identity).map(str::to_owned),
                method_arn,
            }),
            _ => Err(EventError("type is neither TOKEN nor REQUEST")),
        }
    }

    /// The presented key.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::RestToken { key, .. } | Self::RestRequest { key, .. } | Self::HttpV2 { key } => {
                key.as_deref()
            }
        }
    }
}

fn bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

/// The identity source's header (any case), `Bearer ` removed.
fn header_key<'e>(headers: Option<&'e Value>, identity: &IdentitySource) -> Option<&'e str> {
    let headers = headers?.as_object()?;
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&identity.header))
        .and_then(|(_, v)| v.as_str())
        .map(bearer)
        .filter(|k| !k.is_empty())
}

/// The whole stage, so that one cached policy serves every route: `…/<api>/<stage>/*/*`.
#[must_use]
pub fn stage_resource(method_arn: &str) -> String {
    let mut parts = method_arn.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(api), Some(stage)) => format!("{api}/{stage}/*/*"),
        _ => method_arn.to_owned(),
    }
}

fn context(grant: &Grant) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("keyId".into(), grant.key_id.as_str().into());
    context.insert("userEmail".into(), grant.user_email.as_str().into());
    context.insert("plan".into(), grant.plan.as_ref().map_or("default", |p| p.as_str()).into());
    context
}

/// The body of a quota refusal (429), as `meter serve` answers it and the REST stage's gateway response
/// renders it from the deny's context (CONTRACTS.md §9).
#[must_use]
pub fn quota_body(refusal: &QuotaRefusal) -> Value {
    json!({
        "message": "Monthly quota reached",
        "quota": {
            "calls": refusal.quota_calls,
            "period": refusal.period().to_string(),
            "resetsAt": format_instant(refusal.resets_at),
        },
    })
}

/// Seconds from `now` until a quota refusal ends, for `Retry-After` (at least 1).
#[must_use]
pub fn retry_after_seconds(refusal: &QuotaRefusal, now: DateTime<Utc>) -> i64 {
    let millis = (refusal.resets_at - now).num_milliseconds();
    (millis + 999).div_euclid(1000).max(1)
}

/// The deny's context of a quota refusal: what the gateway response's template reads.
fn quota_context(refusal: &QuotaRefusal) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("quotaExceeded".into(), "true".into());
    context.insert("keyId".into(), refusal.key_id.as_str().into());
    context.insert("quotaCalls".into(), refusal.quota_calls.map_or(String::new(), |c| c.to_string()).into());
    context.insert("quotaPeriod".into(), refusal.period().to_string().into());
    context.insert("quotaResetsAt".into(), format_instant(refusal.resets_at).into());
    context
}

/// What to answer API Gateway; `None` means "fail with `Unauthorized`" (REST's 401).
#[must_use]
pub fn response(event: &AuthEvent, decision: &Decision) -> Option<Value> {
    match (event, decision) {
        (AuthEvent::HttpV2 { .. }, Decision::Allow(grant)) => {
            Some(json!({"isAuthorized": true, "context": context(grant)}))
        }
        // HTTP APIs answer 401 themselves when the identity source is missing; otherwise 403.
        // An HTTP API's simple response cannot set the status: a quota refusal is its 403 too.
        (
            AuthEvent::HttpV2 { .. },
            Decision::Deny(_) | Decision::Unauthorized(_) | Decision::OverQuota(_),
        ) => Some(json!({"isAuthorized": false})),
        (_, Decision::Unauthorized(_)) => None,
        (AuthEvent::RestToken { method_arn, .. } | AuthEvent::RestRequest { method_arn, .. }, decision) => {
            let (principal, effect, context) = match decision {
                Decision::Allow(grant) => (grant.key_id.as_str(), "Allow", context(grant)),
                Decision::OverQuota(refusal) => (refusal.key_id.as_str(), "Deny", quota_context(refusal)),
                _ => ("anonymous", "Deny", Map::new()),
            };
            Some(json!({
                "principalId": principal,
                "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": stage_resource(method_arn)}],
                },
                "context": context,
            }))
        }
    }
}
