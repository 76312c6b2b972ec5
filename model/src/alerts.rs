//! What crossing a quota produces: the usage alerts to announce and the refusal marks made (each
//! claimed once in the store, ARCHITECTURE.md "Plan quotas and usage alerts").

use chrono::{DateTime, Utc};

use crate::items::{Email, PlanName};
use crate::key::KeyId;
use crate::quota::QuotaMode;
use crate::time::Month;

/// A customer's month total reaching one of its plan's alert thresholds: announced once per customer,
/// month and threshold (as the EventBridge event `meter.usage.threshold`, CONTRACTS.md §9).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageAlert {
    /// Who the usage is billed to.
    pub customer: Email,
    /// The customer's keys that carry the quota.
    #[serde(serialize_with = "key_ids")]
    pub keys: Vec<KeyId>,
    /// The plan whose quota it is (`None`: the pricing's default plan).
    pub plan: Option<PlanName>,
    /// Billable calls of the month so far, as counted in realtime.
    pub used: u64,
    /// The quota (billable calls per month).
    pub quota: u64,
    /// Whether calls beyond it are refused (`hard`) or priced (`soft`).
    pub mode: QuotaMode,
    /// The month.
    pub period: Month,
    /// The threshold reached, in percent of the quota.
    pub threshold: u16,
    /// When the transformer counted the call that reached it.
    #[serde(serialize_with = "instant")]
    pub as_of: DateTime<Utc>,
}

fn key_ids<S: serde::Serializer>(keys: &[KeyId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(KeyId::as_str))
}

fn instant<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_instant(*at))
}

/// A customer whose hard quota a buffer took past its last call: their keys are marked refused for
/// the month and the revocation epoch moved, so every authorizer reads them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusalMark {
    /// The customer.
    pub customer: Email,
    /// The month refused.
    pub period: Month,
    /// Billable calls counted when it was marked.
    pub used: u64,
    /// The quota.
    pub quota: u64,
    /// The keys marked.
    pub keys: Vec<KeyId>,
}

impl UsageAlert {
    /// The alert as the EventBridge event the stack puts on its bus (and `meter serve` writes, one a
    /// line): `source` `meter`, `detail-type` `meter.usage.threshold`.
    #[must_use]
    pub fn event(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "meter",
            "detail-type": "meter.usage.threshold",
            "time": crate::time::format_instant(self.as_of),
            "detail": self,
        })
    }
}
