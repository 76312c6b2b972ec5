//! API Gateway's authorizer events (REST `TOKEN`, REST `REQUEST`, HTTP API payload 2.0) and the
//! responses each expects.

use serde_json::{Map, Value, json};

use crate::decide::{Decision, Grant};

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
        /// From `x-api-key` (any case) or `Authorization: Bearer`.
        key: Option<String>,
        /// The invoked method's ARN.
        method_arn: String,
    },
    /// HTTP API, payload format 2.0 (simple responses).
    HttpV2 {
        /// From `x-api-key`, `Authorization: Bearer` or the identity source.
        key: Option<String>,
    },
}

/// An event that is none of the three.
#[derive(Debug, thiserror::Error)]
#[error("not an API Gateway authorizer event: {0}")]
pub struct EventError(&'static str);

impl AuthEvent {
    /// Reads an event.
    pub fn parse(event: &Value) -> Result<Self, EventError> {
        let text = |name: &str| event.get(name).and_then(Value::as_str);
        if text("version") == Some("2.0") {
            let from_identity = event
                .get("identitySource")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str);
            let key = header_key(event.get("headers")).or_else(|| from_identity.map(bearer));
            return Ok(Self::HttpV2 { key: key.map(str::to_owned) });
        }
        let method_arn = text("methodArn").ok_or(EventError("methodArn is missing"))?.to_owned();
        match text("type") {
            Some("TOKEN") => Ok(Self::RestToken {
                key: text("authorizationToken").map(|t| bearer(t).to_owned()),
                method_arn,
            }),
            Some("REQUEST") => {
                Ok(Self::RestRequest { key: header_key(event.get("headers")).map(str::to_owned), method_arn })
            }
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

/// `x-api-key` (any case), else `Authorization: Bearer …`.
fn header_key(headers: Option<&Value>) -> Option<&str> {
    let headers = headers?.as_object()?;
    let find = |wanted: &str| {
        headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(wanted)).and_then(|(_, v)| v.as_str())
    };
    find("x-api-key").map(str::trim).or_else(|| find("authorization").map(bearer)).filter(|k| !k.is_empty())
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

/// What to answer API Gateway; `None` means "fail with `Unauthorized`" (REST's 401).
#[must_use]
pub fn response(event: &AuthEvent, decision: &Decision) -> Option<Value> {
    match (event, decision) {
        (AuthEvent::HttpV2 { .. }, Decision::Allow(grant)) => {
            Some(json!({"isAuthorized": true, "context": context(grant)}))
        }
        // HTTP APIs answer 401 themselves when the identity source is missing; otherwise 403.
        (AuthEvent::HttpV2 { .. }, Decision::Deny(_) | Decision::Unauthorized(_)) => {
            Some(json!({"isAuthorized": false}))
        }
        (_, Decision::Unauthorized(_)) => None,
        (AuthEvent::RestToken { method_arn, .. } | AuthEvent::RestRequest { method_arn, .. }, decision) => {
            let (principal, effect, context) = match decision {
                Decision::Allow(grant) => (grant.key_id.as_str(), "Allow", context(grant)),
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
