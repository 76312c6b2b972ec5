//! The decision: is this key allowed right now? With a 30-second cache of answers and a revocation
//! epoch that empties the cache within a second of any revocation.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use meter_model::key::{KeyId, could_be_key, digest_of};
use meter_model::{Clock, Email, KeyStatus, KeyStore, Month, PlanName, PresentedKey, StoreError};
use rustc_hash::FxHashMap;

/// Tuning of the cache.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizerConfig {
    /// How long an allowed key is served from memory.
    pub positive_ttl: Duration,
    /// How long an unknown or revoked key is refused from memory.
    pub negative_ttl: Duration,
    /// How often the revocation epoch is re-read (at most).
    pub epoch_check_interval: Duration,
    /// Bound on remembered allowed keys.
    pub max_positive: usize,
    /// Bound on remembered refused keys: a flood of random keys cannot grow memory past it.
    pub max_negative: usize,
}

impl Default for AuthorizerConfig {
    fn default() -> Self {
        Self {
            positive_ttl: Duration::seconds(30),
            negative_ttl: Duration::seconds(5),
            epoch_check_interval: Duration::seconds(1),
            max_positive: 100_000,
            max_negative: 10_000,
        }
    }
}

/// Who an allowed key belongs to: what the backend receives as authorizer context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The key's id (also the principal).
    pub key_id: KeyId,
    /// The customer.
    pub user_email: Email,
    /// The plan, if not the default.
    pub plan: Option<PlanName>,
    /// When a rotated key's grace period ends: no cache may keep this grant past it.
    pub valid_until: Option<DateTime<Utc>>,
}

impl Grant {
    /// How long a cache may serve this grant from `now`: `ttl`, or less when the grace period ends
    /// sooner.
    #[must_use]
    pub fn cache_until(&self, now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
        let until = now + ttl;
        self.valid_until.map_or(until, |end| end.min(until))
    }
}

/// Why a key is refused with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No key matches (or the secret is wrong: the two are not told apart).
    UnknownKey,
    /// The key was revoked.
    Revoked,
    /// The key was rotated and its grace period is over.
    Expired,
}

/// A key refused for its customer's hard quota: 429 until the month ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The key's id.
    pub key_id: KeyId,
    /// The customer.
    pub user_email: Email,
    /// The quota that was reached (billable calls per UTC month), when the key still carries it.
    pub quota_calls: Option<u64>,
    /// When the month's quota resets: 00:00 UTC of the next month.
    pub resets_at: DateTime<Utc>,
}

impl QuotaRefusal {
    /// The month refused: the one that ends at `resets_at`.
    #[must_use]
    pub fn period(&self) -> Month {
        Month::of(self.resets_at - Duration::milliseconds(1))
    }
}

/// Why a request is refused with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingReason {
    /// No key was sent.
    Missing,
    /// What was sent cannot be a key.
    Malformed,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, on behalf of this grant.
    Allow(Arc<Grant>),
    /// Refused: 403.
    Deny(DenyReason),
    /// Refused: 401.
    Unauthorized(MissingReason),
    /// Refused for the customer's hard quota: 429.
    OverQuota(Arc<QuotaRefusal>),
}

impl Decision {
    /// A short reason for people and logs (never the key).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Allow(_) => "active key",
            Self::Deny(DenyReason::UnknownKey) => "unknown key",
            Self::Deny(DenyReason::Revoked) => "revoked key",
            Self::Deny(DenyReason::Expired) => "rotated key past its grace period",
            Self::Unauthorized(MissingReason::Missing) => "no key sent",
            Self::Unauthorized(MissingReason::Malformed) => "malformed key",
            Self::OverQuota(_) => "monthly quota reached",
        }
    }
}

/// The store could not be asked; the authorizer fails closed.
#[derive(Debug, thiserror::Error)]
#[error("cannot check the key: the key store is unavailable")]
pub struct AuthorizeError(#[source] pub StoreError);

#[derive(Default)]
struct State {
    allowed: FxHashMap<[u8; 32], (Arc<Grant>, DateTime<Utc>)>,
    refused: FxHashMap<[u8; 32], (Decision, DateTime<Utc>)>,
    epoch: Option<u64>,
    epoch_checked_at: Option<DateTime<Utc>>,
}

impl State {
    fn clear(&mut self) {
        self.allowed.clear();
        self.refused.clear();
    }
}

/// Makes room in a bounded cache: drop expired entries, and if that is not enough, everything.
fn make_room<V>(map: &mut FxHashMap<[u8; 32], (V, DateTime<Utc>)>, max: usize, now: DateTime<Utc>) {
    if map.len() < max {
        return;
    }
    map.retain(|_, (_, expires)| *expires > now);
    if map.len() >= max {
        map.clear();
    }
}

/// The authorizer: one per warm Lambda instance.
pub struct Authorizer<S, C> {
    store: S,
    clock: C,
    config: AuthorizerConfig,
    state: Mutex<State>,
}

impl<S: KeyStore, C: Clock> Authorizer<S, C> {
    /// An authorizer over `store`.
    pub fn new(store: S, clock: C, config: AuthorizerConfig) -> Self {
        Self { store, clock, config, state: Mutex::new(State::default()) }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// How many answers are cached: (allowed, refused).
    pub fn cached_entries(&self) -> (usize, usize) {
        let state = self.state();
        (state.allowed.len(), state.refused.len())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a cache: whatever a panicking holder left is safe to use or to drop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides on a presented key (`None` when the request carried none).
    pub async fn decide(&self, presented: Option<&str>) -> Result<Decision, AuthorizeError> {
        let Some(text) = presented.filter(|t| !t.is_empty()) else {
            return Ok(Decision::Unauthorized(MissingReason::Missing));
        };
        // The hit path works on the borrowed text: a shape check and a digest, no allocation.
        if !could_be_key(text) {
            return Ok(Decision::Unauthorized(MissingReason::Malformed));
        }
        let now = self.clock.now();
        self.refresh_epoch(now).await?;
        let digest = digest_of(text);
        {
            let state = self.state();
            if let Some((grant, expires)) = state.allowed.get(&digest)
                && *expires > now
            {
                return Ok(Decision::Allow(Arc::clone(grant)));
            }
            if let Some((refusal, expires)) = state.refused.get(&digest)
                && *expires > now
            {
                return Ok(refusal.clone());
            }
        }
        let key = PresentedKey::new(text);
        let epoch_before = self.state().epoch;
        let decision = self.look_up(&key, now).await?;
        if matches!(decision, Decision::Allow(_)) {
            // A revocation can land while the key is read: its mark comes before its epoch bump, so
            // if the epoch moved meanwhile, the read may predate the mark. Then the key is read again
            // and the answer is not cached, so no Allow read under an older epoch outlives it.
            let epoch_after = self.store.revocation_epoch().await.map_err(AuthorizeError)?;
            if epoch_before != Some(epoch_after) {
                {
                    let mut state = self.state();
                    state.clear();
                    state.epoch = Some(epoch_after);
                    state.epoch_checked_at = Some(now);
                }
                return self.look_up(&key, now).await;
            }
        }
        let mut state = self.state();
        if state.epoch != epoch_before {
            // Another request saw the epoch move while this one read the key: answer, don't cache.
            return Ok(decision);
        }
        match &decision {
            Decision::Allow(grant) => {
                make_room(&mut state.allowed, self.config.max_positive, now);
                // A rotated key's grant leaves the cache when its grace period ends, not 30 s later.
                state
                    .allowed
                    .insert(digest, (Arc::clone(grant), grant.cache_until(now, self.config.positive_ttl)));
            }
            Decision::Deny(_) => {
                make_room(&mut state.refused, self.config.max_negative, now);
                state.refused.insert(digest, (decision.clone(), now + self.config.negative_ttl));
            }
            Decision::OverQuota(refusal) => {
                // A quota refusal never outlives its month: at 00:00 UTC the key is read again.
                make_room(&mut state.refused, self.config.max_negative, now);
                let until = (now + self.config.negative_ttl).min(refusal.resets_at);
                state.refused.insert(digest, (decision.clone(), until));
            }
            Decision::Unauthorized(_) => {}
        }
        Ok(decision)
    }

    /// Re-reads the revocation epoch when the last read is a second old; drops every cached answer
    /// when it moved.
    async fn refresh_epoch(&self, now: DateTime<Utc>) -> Result<(), AuthorizeError> {
        let due = self.state().epoch_checked_at.is_none_or(|at| now - at >= self.config.epoch_check_interval);
        if !due {
            return Ok(());
        }
        let epoch = self.store.revocation_epoch().await.map_err(AuthorizeError)?;
        let mut state = self.state();
        if state.epoch.is_some_and(|known| known != epoch) {
            tracing::info!(epoch, "revocation epoch moved; cache dropped");
            state.clear();
        }
        state.epoch = Some(epoch);
        state.epoch_checked_at = Some(now);
        Ok(())
    }

    async fn look_up(&self, key: &PresentedKey, now: DateTime<Utc>) -> Result<Decision, AuthorizeError> {
        let record = match key.id() {
            Some(id) => self.store.get_key(id).await,
            None => self.store.find_key_by_hash(&key.hashed()).await,
        }
        .map_err(AuthorizeError)?;
        // A wrong secret for a real id looks exactly like an unknown key.
        let Some(record) = record.filter(|r| r.hashed_key.verify(key)) else {
            return Ok(Decision::Deny(DenyReason::UnknownKey));
        };
        Ok(match record.status {
            KeyStatus::Revoked => Decision::Deny(DenyReason::Revoked),
            KeyStatus::Active if record.is_refused_at(now) => Decision::Deny(DenyReason::Expired),
            KeyStatus::Active if record.is_quota_refused_at(now) => {
                Decision::OverQuota(Arc::new(QuotaRefusal {
                    resets_at: meter_model::quota::resets_at(Month::of(now)),
                    quota_calls: record.quota.map(|q| q.calls),
                    key_id: record.id,
                    user_email: record.user_email,
                }))
            }
            KeyStatus::Active => Decision::Allow(Arc::new(Grant {
                key_id: record.id,
                user_email: record.user_email,
                plan: record.plan,
                valid_until: record.grace_ends_at,
            })),
        })
    }
}
