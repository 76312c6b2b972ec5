//! The items of the two tables (CONTRACTS.md §2) and the validated values they are made of.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::counting::Tally;
use crate::key::{HashedKey, KeyId};
use crate::quota::QuotaTerms;
use crate::time::{Day, Month};

/// A customer's e-mail address: who a key's usage is billed to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

serde_as_text!(Email);
serde_as_text!(PlanName);

/// A value given for a key's fields that the contract does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Not an e-mail address.
    #[error("{0:?} is not a valid e-mail address")]
    Email(String),
    /// Not a plan name.
    #[error("{0:?} is not a valid plan name (1 to 64 letters, digits, '-', '_' or '.')")]
    Plan(String),
    /// Not a usable key name.
    #[error("the key name must be 1 to 200 characters without control characters")]
    Name,
    /// Not a key status.
    #[error("{0:?} is not a key status (active or revoked)")]
    Status(String),
}

impl Email {
    /// Validates and normalises an address: surrounding white space is ignored and the whole address
    /// is lowercased, so that `Ada@Example.com` and `ada@example.com` are one customer with one
    /// invoice. (The local part is case-sensitive in theory; no mail provider treats it so, and two
    /// monthly fees for one customer are the worse mistake.) The domain must contain a dot.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let text = text.trim();
        let has_dotted_domain = text.rsplit_once('@').is_some_and(|(_, domain)| {
            domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        });
        if text.len() <= 254 && has_dotted_domain && email_address::EmailAddress::is_valid(text) {
            Ok(Self(text.to_lowercase()))
        } else {
            Err(FieldError::Email(text.to_owned()))
        }
    }

    /// The address as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Email {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The name of a pricing plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanName(String);

impl PlanName {
    /// Validates a plan name.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid { Ok(Self(text.to_owned())) } else { Err(FieldError::Plan(text.to_owned())) }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PlanName {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Validates a key's display name.
pub fn validate_name(text: &str) -> Result<String, FieldError> {
    let valid = !text.trim().is_empty() && text.chars().count() <= 200 && !text.chars().any(char::is_control);
    if valid { Ok(text.trim().to_owned()) } else { Err(FieldError::Name) }
}

/// Whether a key is accepted by the authorizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Accepted.
    Active,
    /// Refused from now on; usage made before still counts.
    Revoked,
}

impl KeyStatus {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        match text {
            "active" => Ok(Self::Active),
            "revoked" => Ok(Self::Revoked),
            other => Err(FieldError::Status(other.to_owned())),
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What it takes to create a key item: everything but the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's id.
    pub id: KeyId,
    /// SHA-256 of the whole key.
    pub hashed_key: HashedKey,
    /// Who the key's usage is billed to.
    pub user_email: Email,
    /// The pricing plan, when not the default.
    pub plan: Option<PlanName>,
    /// A name for people.
    pub name: Option<String>,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
}

/// An item of `ApiKeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    /// Primary key.
    #[serde(serialize_with = "display")]
    pub id: KeyId,
    /// SHA-256 of the whole key; the only stored form of it.
    #[serde(serialize_with = "display_hash")]
    pub hashed_key: HashedKey,
    /// Who the key's usage is billed to.
    pub user_email: Email,
    /// Whether the key is accepted.
    pub status: KeyStatus,
    /// The pricing plan, when not the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanName>,
    /// A name for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When the key was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Timestamp of the latest counted call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
    /// Lifetime counters.
    #[serde(flatten)]
    pub totals: Tally,
    /// Usage the system the key was imported from had counted before meter (`meter keys import`):
    /// part of the lifetime totals, never of a month's usage.
    #[serde(skip_serializing_if = "UsageTotals::is_zero")]
    pub imported: UsageTotals,
    /// When a rotated key stops working (the end of its grace period): refused from then on like a
    /// revoked key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// The customer and plan the key had before each change, oldest first: a month is billed under the
    /// terms in force at its end ([`ApiKeyRecord::terms_at`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub previous_terms: Vec<KeyTerms>,
    /// The plan's monthly quota and alert thresholds, carried by the key (written from the pricing
    /// file by `meter keys create|update`) so that the key look-up the transformer already makes
    /// brings them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaTerms>,
    /// The month in which the customer's hard quota refuses this key: set when the customer's total
    /// crosses it. A mark naming another month refuses nothing, so a new month needs no reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_refused_in: Option<Month>,
}

/// Who a key billed to and on which plan, until a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyTerms {
    /// The instant the change took effect: these terms held before it.
    pub until: DateTime<Utc>,
    /// The customer then.
    pub user_email: Email,
    /// The plan then (none: the pricing's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanName>,
}

/// A change to a key item: each field that is `Some` is set, the others are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChange {
    /// A new customer.
    pub user_email: Option<Email>,
    /// A new plan (`Some(None)`: back to the pricing's default).
    pub plan: Option<Option<PlanName>>,
    /// A new name (`Some(None)`: no name).
    pub name: Option<Option<String>>,
    /// A new status, with its revocation time.
    pub status: Option<(KeyStatus, Option<DateTime<Utc>>)>,
    /// The end of a grace period.
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// The terms history, replaced whole.
    pub previous_terms: Option<Vec<KeyTerms>>,
    /// Usage counted before meter, replaced whole.
    pub imported: Option<UsageTotals>,
    /// New quota terms (`Some(None)`: no quota).
    pub quota: Option<Option<QuotaTerms>>,
    /// A new quota refusal mark (`Some(None)`: cleared).
    pub quota_refused_in: Option<Option<Month>>,
}

impl KeyChange {
    /// Whether the change sets nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The record after the change.
    #[must_use]
    pub fn applied_to(&self, record: &ApiKeyRecord) -> ApiKeyRecord {
        let mut out = record.clone();
        if let Some(email) = &self.user_email {
            out.user_email = email.clone();
        }
        if let Some(plan) = &self.plan {
            out.plan.clone_from(plan);
        }
        if let Some(name) = &self.name {
            out.name.clone_from(name);
        }
        if let Some((status, revoked_at)) = self.status {
            out.status = status;
            out.revoked_at = revoked_at;
        }
        if let Some(at) = self.grace_ends_at {
            out.grace_ends_at = Some(at);
        }
        if let Some(terms) = &self.previous_terms {
            out.previous_terms.clone_from(terms);
        }
        if let Some(quota) = &self.quota {
            out.quota.clone_from(quota);
        }
        if let Some(month) = self.quota_refused_in {
            out.quota_refused_in = month;
        }
        if let Some(imported) = self.imported {
            // The lifetime totals move with the imported usage: they are its sum with the day items'.
            out.totals = out.totals.saturating_sub(out.imported.tally);
            out.totals.add(imported.tally);
            out.last_used = out.last_used.max(imported.last_used);
            out.imported = imported;
        }
        out
    }
}

impl ApiKeyRecord {
    /// The customer and plan the key billed to at `at`: the first earlier terms that held until after
    /// `at`, or the current ones.
    #[must_use]
    pub fn terms_at(&self, at: DateTime<Utc>) -> (&Email, Option<&PlanName>) {
        self.previous_terms
            .iter()
            .find(|terms| terms.until > at)
            .map_or((&self.user_email, self.plan.as_ref()), |terms| (&terms.user_email, terms.plan.as_ref()))
    }

    /// Whether the key is refused at `now`: revoked, or past the end of its grace period.
    #[must_use]
    pub fn is_refused_at(&self, now: DateTime<Utc>) -> bool {
        self.status == KeyStatus::Revoked || self.grace_ends_at.is_some_and(|end| end <= now)
    }

    /// Whether the customer's hard quota refuses the key at `now`: marked for the month `now` is in.
    #[must_use]
    pub fn is_quota_refused_at(&self, now: DateTime<Utc>) -> bool {
        self.quota_refused_in == Some(Month::of(now))
    }

    /// A fresh, active key item with zero counters.
    #[must_use]
    pub fn new(key: NewKey) -> Self {
        Self {
            id: key.id,
            hashed_key: key.hashed_key,
            user_email: key.user_email,
            status: KeyStatus::Active,
            plan: key.plan,
            name: key.name,
            created_at: key.created_at,
            revoked_at: None,
            last_used: None,
            totals: Tally::default(),
            imported: UsageTotals::default(),
            grace_ends_at: None,
            previous_terms: Vec::new(),
            quota: None,
            quota_refused_in: None,
        }
    }
}

fn display<S: serde::Serializer>(value: &KeyId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_str())
}

fn display_hash<S: serde::Serializer>(value: &HashedKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_str())
}

/// One key's counts on one UTC day: its `UsageCounters` item and the day's *open* usage (CONTRACTS.md
/// §2), what the realtime path counted since reconcile last set the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUsage {
    /// The key.
    pub key_id: KeyId,
    /// The UTC day.
    pub day: Day,
    /// The day's counters, open usage included.
    pub tally: Tally,
    /// Of `tally`, the open usage: counted in realtime and not yet reconciled (provisional). The
    /// rest is what the last reconcile run set from the archive.
    pub open: Tally,
    /// Timestamp of the latest counted call that day.
    pub last_used: Option<DateTime<Utc>>,
    /// When reconciliation last set this item.
    pub reconciled_at: Option<DateTime<Utc>>,
}

impl DayUsage {
    /// A key's day with nothing counted yet.
    #[must_use]
    pub fn empty(key_id: KeyId, day: Day) -> Self {
        Self {
            key_id,
            day,
            tally: Tally::default(),
            open: Tally::default(),
            last_used: None,
            reconciled_at: None,
        }
    }
}

/// Counters over a period (lifetime or a month) with the latest use in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// The counters.
    #[serde(flatten)]
    pub tally: Tally,
    /// Timestamp of the latest counted call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
}

impl UsageTotals {
    /// No usage at all.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.tally.is_zero() && self.last_used.is_none()
    }

    /// These totals with `other`'s added (the later of the two last uses).
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        let mut tally = self.tally;
        tally.add(other.tally);
        Self { tally, last_used: self.last_used.max(other.last_used) }
    }

    /// Sums day items.
    #[must_use]
    pub fn of_days(days: &[DayUsage]) -> Self {
        Self {
            tally: days.iter().map(|d| d.tally).sum(),
            last_used: days.iter().filter_map(|d| d.last_used).max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_trimmed() {
        assert_eq!(Email::parse(" ada@example.com ").unwrap().as_str(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "a b@example.com", "ada@localhost", "ada@example."] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_one_customer_whatever_their_case() {
        assert_eq!(Email::parse("Ada@Example.COM").unwrap(), Email::parse("ada@example.com").unwrap());
        assert_eq!(Email::parse(" ADA@example.com").unwrap().as_str(), "ada@example.com");
    }

    #[test]
    fn plan_and_name_rules() {
        assert!(PlanName::parse("pro-2026.v1").is_ok());
        assert!(PlanName::parse("").is_err());
        assert!(PlanName::parse("has space").is_err());
        assert_eq!(validate_name("  checkout service ").unwrap(), "checkout service");
        assert!(validate_name("   ").is_err());
        assert!(validate_name("tab\there").is_err());
    }

    #[test]
    fn month_totals_sum_days_and_take_the_latest_use() {
        let key = KeyId::parse("0123456789ab").unwrap();
        let day = |d: &str, n: u64, used: &str| DayUsage {
            key_id: key.clone(),
            day: d.parse().unwrap(),
            tally: Tally { successful_calls: n, failed_calls: 1, usage_count: n + 1 },
            open: Tally::default(),
            last_used: Some(crate::time::parse_instant(used).unwrap()),
            reconciled_at: None,
        };
        let totals = UsageTotals::of_days(&[
            day("2026-11-02", 5, "2026-11-02T10:00:00Z"),
            day("2026-11-01", 2, "2026-11-01T23:00:00Z"),
        ]);
        assert_eq!(totals.tally, Tally { successful_calls: 7, failed_calls: 2, usage_count: 9 });
        assert_eq!(totals.last_used.unwrap().to_rfc3339(), "2026-11-02T10:00:00+00:00");
    }
}
