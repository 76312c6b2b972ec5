//! The API Gateway authorizer (CONTRACTS.md §1): key verification with a 30-second cache and
//! revocation through the epoch, the three event kinds API Gateway sends, and the invalidator that
//! flushes API Gateway's own authorizer cache on revocation.

#[cfg(feature = "lambda")]
mod api_gateway;
pub mod decide;
pub mod event;
pub mod invalidate;
#[cfg(feature = "lambda")]
pub mod lambda;

pub use decide::{
    AuthorizeError, Authorizer, AuthorizerConfig, Decision, DenyReason, Grant, MissingReason, QuotaRefusal,
};
pub use event::{AuthEvent, EventError, IdentitySource, quota_body, response, retry_after_seconds};

/// Why an invocation fails instead of answering; API Gateway turns these into status codes.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// REST APIs answer 401 for exactly this error message.
    #[error("Unauthorized")]
    Unauthorized,
    /// The key store cannot be asked: API Gateway answers 500, never allows.
    #[error("internal authorizer error")]
    Internal(#[source] AuthorizeError),
    /// Not an authorizer event (a misconfiguration): 500.
    #[error("not an authorizer event")]
    BadEvent(#[from] event::EventError),
}

/// One authorizer invocation: the event in, API Gateway's answer out; the key is read from
/// `identity` only.
pub async fn handle<S, C>(
    authorizer: &Authorizer<S, C>,
    identity: &IdentitySource,
    event: &serde_json::Value,
) -> Result<serde_json::Value, InvocationError>
where
    S: meter_model::KeyStore,
    C: meter_model::Clock,
{
    let request = AuthEvent::parse_with(event, identity)?;
    let decision = match authorizer.decide(request.key()).await {
        Ok(decision) => decision,
        Err(err) => {
            tracing::error!(error = %meter_model::error_chain(&err), "authorizer cannot reach the key store; failing closed");
            return Err(InvocationError::Internal(err));
        }
    };
    match &decision {
        Decision::Allow(grant) => tracing::debug!(key_id = %grant.key_id, "allowed"),
        refused => tracing::info!(reason = refused.reason(), "refused"),
    }
    response(&request, &decision).ok_or(InvocationError::Unauthorized)
}
