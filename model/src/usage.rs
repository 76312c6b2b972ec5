//! The usage line (CONTRACTS.md §3): one JSON object per request, printed by the API backend, read back from
//! CloudWatch Logs in any of the three shapes Lambda produces.
//!
//! This is the contract, not a reader: the event, the reasons a line is rejected, and the rules a
//! usage line's fields must keep ([`UsageFields::validate`]). The readers that find the fields in
//! CloudWatch Logs payloads live with the realtime stage. Validation is strict about what it bills: a
//! usage line that breaks the contract is [`LineOutcome::Rejected`] with a reason, so that it is
//! counted and kept, never silently dropped. Strings are borrowed from the input where they need no
//! unescaping, which keeps the hot path free of allocation for ordinary lines.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, TimeDelta, Utc};

use crate::counting::Tally;
use crate::key::KeyId;

/// The `type` that marks a usage line.
pub const USAGE_TYPE: &str = "API_USAGE";
/// Longest accepted `requestId` (API Gateway's are 36 characters).
pub const MAX_REQUEST_ID_LEN: usize = 256;
/// Longest accepted `method`.
pub const MAX_METHOD_LEN: usize = 32;
/// Longest accepted `resource`.
pub const MAX_RESOURCE_LEN: usize = 2048;

/// One valid usage event: a request that the backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent<'a> {
    /// Identifies the request; a request is counted once.
    pub request_id: Cow<'a, str>,
    /// The id of the API key that made the request.
    pub key_id: Cow<'a, str>,
    /// When the request happened (UTC); decides its day and month.
    pub timestamp: DateTime<Utc>,
    /// HTTP status of the response, 100–599.
    pub status_code: u16,
    /// Whether the backend marked the call billable; absent means false.
    pub should_count: bool,
    /// HTTP method, when given.
    pub method: Option<Cow<'a, str>>,
    /// API resource (route template), when given.
    pub resource: Option<Cow<'a, str>>,
    /// Backend latency in milliseconds, when given (fits an int32).
    pub latency_ms: Option<u32>,
    /// Optional fields the line had but that broke the contract: dropped (absent here), the call
    /// counts all the same.
    pub dropped: DroppedFields,
}

/// Optional fields of a usage line that broke the contract and were dropped. A bad optional field
/// never un-bills a call: it is left out and counted as a warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DroppedFields(u8);

impl DroppedFields {
    /// None dropped.
    pub const NONE: Self = Self(0);
    /// `method`.
    pub const METHOD: Self = Self(1);
    /// `resource`.
    pub const RESOURCE: Self = Self(2);
    /// `latencyMs`.
    pub const LATENCY_MS: Self = Self(4);
    const ALL: [(Self, &'static str); 3] =
        [(Self::METHOD, "method"), (Self::RESOURCE, "resource"), (Self::LATENCY_MS, "latencyMs")];

    /// Whether no field was dropped.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `field` was dropped.
    #[must_use]
    pub const fn contains(self, field: Self) -> bool {
        self.0 & field.0 == field.0 && field.0 != 0
    }

    fn insert(&mut self, field: Self) {
        self.0 |= field.0;
    }

    /// The names of the dropped fields, as the usage line spells them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().filter(move |(field, _)| self.contains(*field)).map(|(_, name)| name)
    }
}

/// How far a usage line's own `timestamp` may lie before its CloudWatch log event's time. A backend
/// logs a request when it ends, and a request lasts at most 15 minutes (Lambda's limit; API Gateway's
/// is 29 seconds).
pub const MAX_TIMESTAMP_BEFORE_LOG: TimeDelta = TimeDelta::minutes(15);
/// How far a usage line's own `timestamp` may lie after its log event's time: clocks disagree, but
/// not by more than this.
pub const MAX_TIMESTAMP_AFTER_LOG: TimeDelta = TimeDelta::minutes(5);

impl UsageEvent<'_> {
    /// What this event contributes to the counters.
    #[must_use]
    pub fn tally(&self) -> Tally {
        Tally::of_call(self.status_code, self.should_count)
    }

    /// The event with its strings owned, free of the input's lifetime.
    #[must_use]
    pub fn into_owned(self) -> UsageEvent<'static> {
        UsageEvent {
            request_id: Cow::Owned(self.request_id.into_owned()),
            key_id: Cow::Owned(self.key_id.into_owned()),
            timestamp: self.timestamp,
            status_code: self.status_code,
            should_count: self.should_count,
            method: self.method.map(|m| Cow::Owned(m.into_owned())),
            resource: self.resource.map(|r| Cow::Owned(r.into_owned())),
            latency_ms: self.latency_ms,
            dropped: self.dropped,
        }
    }
}

/// Why a usage line was rejected. The text names the field and the rule, never the line's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    /// The line looked like a usage line but is not valid JSON.
    #[error("malformed JSON")]
    MalformedJson,
    /// A required field is absent or null.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// The line's `timestamp` is further from its log event's time than a request can last
    /// ([`MAX_TIMESTAMP_BEFORE_LOG`]) or clocks can disagree ([`MAX_TIMESTAMP_AFTER_LOG`]).
    #[error("timestamp is more than 15 minutes before or 5 minutes after the log event's time")]
    TimestampSkew,
    /// The log event around the line is damaged: its bytes are not UTF-8 text, or hold raw control
    /// characters.
    #[error("the log event holds bytes that are not UTF-8 text, or raw control characters")]
    InvalidBytes,
    /// The log event's own timestamp is not a time, so the line's cannot be checked against it.
    #[error("the log event's timestamp is not a time in epoch milliseconds")]
    InvalidLogTimestamp,
    /// A field has the wrong JSON type or shape.
    #[error("{field} must be {expected}")]
    Invalid {
        /// The field's name in the usage line.
        field: &'static str,
        /// What the contract requires of it.
        expected: &'static str,
    },
}

impl RejectReason {
    /// A short stable code for metrics and files (`missing_keyId`, `invalid_statusCode`, …).
    #[must_use]
    pub fn code(&self) -> String {
        match self {
            Self::MalformedJson => "malformed_json".to_owned(),
            Self::Missing(field) => format!("missing_{field}"),
            Self::TimestampSkew => "timestamp_skew".to_owned(),
            Self::InvalidBytes => "invalid_bytes".to_owned(),
            Self::InvalidLogTimestamp => "invalid_log_timestamp".to_owned(),
            Self::Invalid { field, .. } => format!("invalid_{field}"),
        }
    }
}

/// What one log message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome<'a> {
    /// A valid usage event.
    Usage(UsageEvent<'a>),
    /// Not a usage line (other log output); ignored.
    Skipped,
    /// A usage line that breaks the contract.
    Rejected(RejectReason),
}

/// The fields of a usage line as a reader found them, each kept as its raw JSON text (a string still
/// quoted, and possibly still escaped as `\"…\"` inside a log line that is itself a JSON string), so
/// that a wrong type becomes a precise rejection rather than a generic parse failure. Readers fill
/// it; [`UsageFields::validate`] applies the contract.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageFields<'a> {
    /// `type`.
    pub kind: Option<&'a str>,
    /// `requestId`.
    pub request_id: Option<&'a str>,
    /// `keyId`.
    pub key_id: Option<&'a str>,
    /// `timestamp`.
    pub timestamp: Option<&'a str>,
    /// `statusCode`.
    pub status_code: Option<&'a str>,
    /// `shouldCount`.
    pub should_count: Option<&'a str>,
    /// `method`.
    pub method: Option<&'a str>,
    /// `resource`.
    pub resource: Option<&'a str>,
    /// `latencyMs`.
    pub latency_ms: Option<&'a str>,
    /// `message` (Lambda's JSON log format wraps the usage line in it).
    pub message: Option<&'a str>,
}

impl<'a> UsageFields<'a> {
    /// Whether `type` is `API_USAGE`.
    #[must_use]
    pub fn is_usage(&self) -> bool {
        self.kind.and_then(json_str).is_some_and(|kind| kind == USAGE_TYPE)
    }

    /// The usage event these fields make, or why the line is rejected. `log_timestamp` (the
    /// CloudWatch log event's time) stands in for an absent `timestamp`.
    #[must_use]
    pub fn validate(self, log_timestamp: Option<DateTime<Utc>>) -> LineOutcome<'a> {
        match self.event(log_timestamp) {
            Ok(event) => LineOutcome::Usage(event),
            Err(reason) => LineOutcome::Rejected(reason),
        }
    }

    fn event(self, log_timestamp: Option<DateTime<Utc>>) -> Result<UsageEvent<'a>, RejectReason> {
        let request_id = required_text(self.request_id, "requestId", MAX_REQUEST_ID_LEN, || {
            invalid("requestId", "a non-empty string of at most 256 printable characters")
        })?;
        // The same rule as a key item's id, so that every counted key id can name an item.
        let key_id = match self.key_id {
            None => return Err(RejectReason::Missing("keyId")),
            Some(raw) => json_str(raw)
                .filter(|id| KeyId::is_valid(id))
                .ok_or_else(|| invalid("keyId", "a key id: 1 to 128 letters, digits, '-', '_' or '.'"))?,
        };
        let status_code = match self.status_code {
            None => return Err(RejectReason::Missing("statusCode")),
            Some(raw) => json_int(raw)
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (100..=599).contains(code))
                .ok_or_else(|| invalid("statusCode", "an integer from 100 to 599"))?,
        };
        let should_count = match self.should_count {
            None => false,
            Some(raw) => match raw {
                "true" => true,
                "false" => false,
                _ => return Err(invalid("shouldCount", "a JSON boolean")),
            },
        };
        let timestamp = match self.timestamp {
            // The log event's time stands in, and it too must have a four-digit year.
            None => log_timestamp.filter(|at| in_years(*at)).ok_or(RejectReason::Missing("timestamp"))?,
            Some(raw) => {
                let at = json_timestamp(raw).ok_or_else(|| {
                    invalid("timestamp", "an ISO-8601 UTC time or epoch milliseconds, in years 1970 to 9999")
                })?;
                // The offset, not `logged ± window`: a log time at the ends of chrono's range
                // cannot be moved further, and any two instants' difference fits a TimeDelta.
                if let Some(logged) = log_timestamp
                    && let offset = at.signed_duration_since(logged)
                    && (offset < -MAX_TIMESTAMP_BEFORE_LOG || offset > MAX_TIMESTAMP_AFTER_LOG)
                {
                    return Err(RejectReason::TimestampSkew);
                }
                at
            }
        };
        // A bad optional field is dropped, never a reason to un-bill the call.
        let mut dropped = DroppedFields::NONE;
        let mut optional = |value: Result<Option<Cow<'a, str>>, ()>, field| {
            value.unwrap_or_else(|()| {
                dropped.insert(field);
                None
            })
        };
        let method = optional(optional_text(self.method, MAX_METHOD_LEN), DroppedFields::METHOD);
        let resource = optional(optional_text(self.resource, MAX_RESOURCE_LEN), DroppedFields::RESOURCE);
        let latency_ms = self.latency_ms.and_then(|raw| {
            let ms =
                json_int(raw).and_then(|ms| u32::try_from(ms).ok()).filter(|&ms| i32::try_from(ms).is_ok());
            if ms.is_none() {
                dropped.insert(DroppedFields::LATENCY_MS);
            }
            ms
        });
        Ok(UsageEvent {
            request_id,
            key_id,
            timestamp,
            status_code,
            should_count,
            method,
            resource,
            latency_ms,
            dropped,
        })
    }
}

fn invalid(field: &'static str, expected: &'static str) -> RejectReason {
    RejectReason::Invalid { field, expected }
}

fn required_text<'a>(
    raw: Option<&'a str>,
    field: &'static str,
    max_len: usize,
    wrong: impl FnOnce() -> RejectReason,
) -> Result<Cow<'a, str>, RejectReason> {
    let raw = raw.ok_or(RejectReason::Missing(field))?;
    json_str(raw).filter(|s| is_printable(s, max_len)).ok_or_else(wrong)
}

fn optional_text(raw: Option<&str>, max_len: usize) -> Result<Option<Cow<'_, str>>, ()> {
    match raw {
        None => Ok(None),
        Some(raw) => json_str(raw).filter(|s| s.len() <= max_len && !has_control(s)).map(Some).ok_or(()),
    }
}

fn is_printable(text: &str, max_len: usize) -> bool {
    !text.is_empty() && text.len() <= max_len && !has_control(text)
}

fn has_control(text: &str) -> bool {
    // Almost all text is printable ASCII, which one branch-free pass over the bytes (vectorized)
    // confirms; only other text needs the look at each character.
    let unusual = text.bytes().fold(false, |seen, b| seen | !(0x20..0x7f).contains(&b));
    unusual && text.chars().any(char::is_control)
}

/// A JSON string's value, borrowed when it holds no escapes.
fn json_str(text: &str) -> Option<Cow<'_, str>> {
    // Written `\"…\"`: a string of a line read without unescaping, which holds no escapes itself.
    if let Some(inner) = text.strip_prefix("\\\"").and_then(|t| t.strip_suffix("\\\"")) {
        return Some(Cow::Borrowed(inner));
    }
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A JSON integer (no fraction, no exponent).
fn json_int(raw: &str) -> Option<i64> {
    raw.parse().ok()
}

fn json_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let at = match json_int(raw) {
        Some(millis) => DateTime::from_timestamp_millis(millis)?,
        None => {
            let text = json_str(raw)?;
            match utc_millis_fast(&text) {
                Some(at) => at,
                None => DateTime::parse_from_rfc3339(&text).ok()?.to_utc(),
            }
        }
    };
    in_years(at).then_some(at)
}

/// Four-digit years only: every day must have a `year=YYYY` partition and a `YYYY-MM-DD` bucket.
fn in_years(at: DateTime<Utc>) -> bool {
    (1970..=9999).contains(&at.naive_utc().year())
}

/// The common shapes `YYYY-MM-DDTHH:MM:SSZ` and `YYYY-MM-DDTHH:MM:SS.mmmZ`, read without the general
/// RFC 3339 parser (a few times faster; every usage line has a timestamp). Anything else: `None`.
fn utc_millis_fast(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let fraction = match b.len() {
        20 => false,
        24 if b[19] == b'.' => true,
        _ => return None,
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (b.len() - 1, b'Z')];
    if punctuation.iter().any(|&(at, ch)| b[at] != ch) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let year = i32::try_from(number(0, 4)?).ok()?;
    let millis = if fraction { number(20, 23)? } else { 0 };
    chrono::NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?
        .and_hms_milli_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?, millis)
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;
    use proptest::prelude::*;

    #[test]
    fn the_fast_timestamp_path_agrees_with_rfc3339() {
        for text in [
            "2026-11-29T14:03:07.123Z",
            "2026-11-29T14:03:07Z",
            "1970-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "2028-02-29T00:00:00Z",
        ] {
            assert_eq!(utc_millis_fast(text), Some(parse_instant(text).unwrap()), "{text}");
        }
        for text in [
            "2026-02-30T00:00:00Z",
            "2026-11-29T24:00:00Z",
            "2026-11-29T14:03:07.12Z",
            "2026-11-29 14:03:07Z",
            "2026-11-29T14:03:07+00:00",
            "２０26-11-29T14:03:07Z",
        ] {
            assert_eq!(utc_millis_fast(text), None, "{text}");
        }
    }

    #[test]
    fn reasons_have_stable_codes() {
        assert_eq!(RejectReason::MalformedJson.code(), "malformed_json");
        assert_eq!(RejectReason::Missing("keyId").code(), "missing_keyId");
        assert_eq!(invalid("statusCode", "x").code(), "invalid_statusCode");
        assert_eq!(invalid("statusCode", "an integer").to_string(), "statusCode must be an integer");
    }

    proptest! {
        #[test]
        fn control_characters_are_found_in_ascii_and_beyond(text in "[ -~\u{0}-\u{1f}\u{7f}-\u{a0}é]{0,12}") {
            prop_assert_eq!(has_control(&text), text.chars().any(char::is_control));
        }
    }
}
