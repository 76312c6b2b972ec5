//! API Gateway, as it treats a request before the backend sees it: the key from the identity source,
//! the authorizer's answer cached per key for the deployed TTL, and API Gateway's own answers — 401
//! `Unauthorized` without a key, 403 for a refused key, 500 when the authorizer fails.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use meter_authorizer::invalidate::{CacheFlusher, FlushError, FlushTarget};
use meter_authorizer::{Authorizer, Decision, Grant, QuotaRefusal};
use meter_model::key::digest_of;
use meter_model::{Clock, KeyStore};
use rustc_hash::FxHashMap;

/// How long API Gateway keeps an authorizer's answer (infra `AUTHORIZER_RESULT_TTL`).
pub const RESULT_TTL: Duration = Duration::seconds(30);

/// Entries API Gateway's cache holds at most here; beyond, it starts afresh (a flood of random keys
/// cannot grow memory).
const MAX_ENTRIES: usize = 100_000;

/// What API Gateway does with a request, given the authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Passed to the backend with this context.
    Allowed(Arc<Grant>),
    /// 401 `{"message":"Unauthorized"}`: no key, or not one (the authorizer's `Unauthorized`).
    Unauthorized,
    /// 403 `{"message":"User is not authorized to access this resource"}`: refused.
    Forbidden,
    /// 429 with the quota's body and `Retry-After`: the customer's hard quota is reached for the month.
    OverQuota(Arc<QuotaRefusal>),
    /// 500 `{"message":null}`: the authorizer failed (API Gateway's `AuthorizerConfigurationException`).
    AuthorizerFailed,
}

#[derive(Debug, Clone)]
struct Cached {
    admission: Admission,
    expires: DateTime<Utc>,
}

/// API Gateway's authorizer-result cache in front of the authorizer the Lambda runs.
pub struct Gateway<S, C> {
    authorizer: Authorizer<S, C>,
    clock: C,
    cache: Mutex<FxHashMap<[u8; 32], Cached>>,
    /// The revocation epoch at the last look.
    epoch: Mutex<Option<u64>>,
}

impl<S: KeyStore, C: Clock + Clone> Gateway<S, C> {
    /// A gateway in front of `authorizer`.
    pub fn new(authorizer: Authorizer<S, C>, clock: C) -> Self {
        Self { authorizer, clock, cache: Mutex::new(FxHashMap::default()), epoch: Mutex::new(None) }
    }

    /// Admits or refuses a request that carries `identity` (the identity source's value, if any); says
    /// whether the answer came from the cache.
    pub async fn admit(&self, identity: Option<&str>) -> (Admission, bool) {
        // API Gateway answers 401 itself when the identity source is missing or empty.
        let Some(key) = identity.filter(|key| !key.trim().is_empty()) else {
            return (Admission::Unauthorized, false);
        };
        let now = self.clock.now();
        let digest = digest_of(key);
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&digest)
            && hit.expires > now
        {
            return (hit.admission.clone(), true);
        }
        let admission = match self.authorizer.decide(Some(key)).await {
            Ok(Decision::Allow(grant)) => Admission::Allowed(grant),
            Ok(Decision::Deny(_)) => Admission::Forbidden,
            Ok(Decision::OverQuota(refusal)) => Admission::OverQuota(refusal),
            Ok(Decision::Unauthorized(_)) => Admission::Unauthorized,
            Err(err) => {
                tracing::warn!(error = %meter_model::error_chain(&err), "the authorizer failed");
                return (Admission::AuthorizerFailed, false);
            }
        };
        // An `Unauthorized` error is not cached by API Gateway; allow and deny policies are.
        if admission != Admission::Unauthorized {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            // At a rotated key's grace end the deployed stack flushes API Gateway's cache (a one-time
            // schedule publishes the revocation notice then); here the entry simply ends there.
            let expires = match &admission {
                Admission::Allowed(grant) => grant.cache_until(now, RESULT_TTL),
                Admission::OverQuota(refusal) => (now + RESULT_TTL).min(refusal.resets_at),
                _ => now + RESULT_TTL,
            };
            cache.insert(digest, Cached { admission: admission.clone(), expires });
        }
        (admission, false)
    }

    /// Whether the store's revocation epoch has moved since the last look (the first look only
    /// records it). A move is what the revocation topic announces on AWS.
    pub async fn revoked_since_last_look(&self) -> bool {
        let current = match self.authorizer.store().revocation_epoch().await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(error = %meter_model::error_chain(&err), "cannot read the revocation epoch");
                return false;
            }
        };
        let mut seen = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        let moved = seen.is_some_and(|previous| previous != current);
        *seen = Some(current);
        moved
    }
}

/// The gateway's cache is what the invalidator flushes locally: one stage, every entry.
impl<S: Send + Sync, C: Send + Sync> CacheFlusher for Gateway<S, C> {
    fn flush(&self, _target: &FlushTarget) -> impl Future<Output = Result<(), FlushError>> + Send {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).clear();
        std::future::ready(Ok(()))
    }
}
