//! The usage line (DESIGN §3.3): one JSON object per request, printed by the API backend, read back from
//! CloudWatch Logs in any of the three shapes Lambda produces.
//!
//! Parsing is strict about what it bills and lenient about what it skips: a line that is not a usage
//! line is [`LineOutcome::Skipped`]; a usage line that breaks the contract is
//! [`LineOutcome::Rejected`] with a reason, so that it is counted and kept, never silently dropped.
//! Strings are borrowed from the input where they need no unescaping, which keeps the hot path free
//! of allocation for ordinary lines.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

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
}

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
            Self::Invalid { field, .. } => format!("invalid_{field}"),
        }
    }
}

static USAGE_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(USAGE_TYPE.as_bytes()));

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

/// Reads one log message. `log_timestamp` is the CloudWatch log event's timestamp, used when the line
/// carries none; without either, the line is rejected.
#[must_use]
pub fn parse_line(message: &str, log_timestamp: Option<DateTime<Utc>>) -> LineOutcome<'_> {
    // Most log lines are not usage lines; this scan lets them go without any JSON parsing.
    if USAGE_FINDER.find(message.as_bytes()).is_none() {
        return LineOutcome::Skipped;
    }
    let Some(json) = json_part(message) else {
        return LineOutcome::Skipped;
    };
    let Ok(fields) = read_fields(json) else {
        return LineOutcome::Rejected(RejectReason::MalformedJson);
    };
    if fields.is_usage() {
        return fields.validate(log_timestamp);
    }
    // Lambda's JSON log format: the usage line is the `message`, as an object or as a string.
    let Some(inner) = fields.message else {
        return LineOutcome::Skipped;
    };
    match inner.as_bytes().first() {
        Some(b'{') => match read_fields(inner) {
            Ok(inner) if inner.is_usage() => inner.validate(log_timestamp),
            Ok(_) => LineOutcome::Skipped,
            Err(_) => LineOutcome::Rejected(RejectReason::MalformedJson),
        },
        Some(b'"') => {
            let Ok(text) = serde_json::from_str::<Cow<'_, str>>(inner) else {
                return LineOutcome::Skipped;
            };
            match parse_line(&text, log_timestamp) {
                LineOutcome::Usage(event) => LineOutcome::Usage(event.into_owned()),
                LineOutcome::Skipped => LineOutcome::Skipped,
                LineOutcome::Rejected(reason) => LineOutcome::Rejected(reason),
            }
        }
        _ => LineOutcome::Skipped,
    }
}

/// [`parse_line`] of a line still escaped as the inside of a JSON string literal (how CloudWatch Logs
/// payloads hold it), read without unescaping it. `None` when this reader is not sure; then unescape
/// the line and call [`parse_line`]. Whenever it answers, the answer is [`parse_line`]'s (checked by a
/// property test).
#[must_use]
pub fn parse_escaped_line(escaped: &str, log_timestamp: Option<DateTime<Utc>>) -> Option<LineOutcome<'_>> {
    // `API_USAGE` needs no escaping, so the escaped line contains it exactly when the line does.
    if USAGE_FINDER.find(escaped.as_bytes()).is_none() {
        return Some(LineOutcome::Skipped);
    }
    parse_escaped_message(escaped, 0, log_timestamp)
        .and_then(|(outcome, end)| (end == escaped.len()).then_some(outcome))
}

/// [`parse_escaped_line`] of a message where a payload holds it: `text[start..]` is the inside of a
/// JSON string literal and whatever follows it, so the message ends at the first unescaped `"` (or
/// at the end of `text`). Returns the outcome and where the message ends, found by reading the line
/// itself: the payload's reader walks each usage line once, not once to find its end and again to
/// read it. Declines (`None`) exactly where [`parse_escaped_line`] would, and also on lines that are
/// not JSON at all, whose end the caller then finds by itself.
#[must_use]
pub fn parse_escaped_message(
    text: &str,
    start: usize,
    log_timestamp: Option<DateTime<Utc>>,
) -> Option<(LineOutcome<'_>, usize)> {
    let b = text.as_bytes();
    let (mut fields, mut inner) = (Fields::default(), Fields::default());
    let (end, message_read) =
        fast::object::<true>(text, escaped_json_start(b, start)?, &mut fields, Some(&mut inner))?;
    let end = fast::skip_ws::<true>(b, end);
    if end != b.len() && b[end] != b'"' {
        return None;
    }
    if fields.is_usage() {
        return Some((fields.validate(log_timestamp), end));
    }
    // Lambda's JSON log format: the usage line is the `message`, as an object or as a string.
    if message_read {
        let outcome = if inner.is_usage() { inner.validate(log_timestamp) } else { LineOutcome::Skipped };
        return Some((outcome, end));
    }
    match fields.message {
        // A message that is itself an escaped string is escaped twice: leave it to the general path.
        Some(inner) if inner.starts_with('\\') => None,
        _ => Some((LineOutcome::Skipped, end)),
    }
}

/// Where [`json_part`] of an escaped message starting at `at` begins, declining (`None`) wherever the
/// two could differ: before a bare line's `{`, or after the three tabs of Lambda's text format with no
/// other escape (nor control character) before them.
fn escaped_json_start(b: &[u8], at: usize) -> Option<usize> {
    let mut at = fast::skip_ws::<true>(b, at);
    if b.get(at) == Some(&b'{') {
        return Some(at);
    }
    for _ in 0..3 {
        at = next_special(b, at);
        if b.get(at..at + 2) != Some(b"\\t") {
            return None;
        }
        at += 2;
    }
    at = fast::skip_ws::<true>(b, at);
    (b.get(at) == Some(&b'{')).then_some(at)
}

/// The JSON object of a bare line or of Lambda's text format (`<time>\t<requestId>\t<LEVEL>\t{...}`).
/// JSON strings cannot hold raw tabs, so splitting on the first three tabs is exact.
fn json_part(message: &str) -> Option<&str> {
    let trimmed = message.trim();
    if trimmed.starts_with('{') {
        return Some(trimmed);
    }
    let mut parts = trimmed.splitn(4, '\t');
    let (_time, _request, _level) = (parts.next()?, parts.next()?, parts.next()?);
    let json = parts.next()?.trim_start();
    json.starts_with('{').then_some(json)
}

/// The fields of a usage line, each kept as its raw JSON text so that a wrong type becomes a precise
/// rejection rather than a generic parse failure.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<&'a str>,
    request_id: Option<&'a str>,
    key_id: Option<&'a str>,
    timestamp: Option<&'a str>,
    status_code: Option<&'a str>,
    should_count: Option<&'a str>,
    method: Option<&'a str>,
    resource: Option<&'a str>,
    latency_ms: Option<&'a str>,
    message: Option<&'a str>,
}

/// The general reader of [`Fields`]: serde_json, for any valid JSON.
#[derive(Deserialize)]
struct SerdeFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "requestId", borrow)]
    request_id: Option<&'a RawValue>,
    #[serde(rename = "keyId", borrow)]
    key_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "statusCode", borrow)]
    status_code: Option<&'a RawValue>,
    #[serde(rename = "shouldCount", borrow)]
    should_count: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    #[serde(rename = "latencyMs", borrow)]
    latency_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

impl<'a> From<SerdeFields<'a>> for Fields<'a> {
    fn from(f: SerdeFields<'a>) -> Self {
        let raw = |v: Option<&'a RawValue>| v.map(RawValue::get);
        Self {
            kind: raw(f.kind),
            request_id: raw(f.request_id),
            key_id: raw(f.key_id),
            timestamp: raw(f.timestamp),
            status_code: raw(f.status_code),
            should_count: raw(f.should_count),
            method: raw(f.method),
            resource: raw(f.resource),
            latency_ms: raw(f.latency_ms),
            message: raw(f.message),
        }
    }
}

/// Reads a JSON object into [`Fields`]: the fast reader for the common case, serde_json for the rest.
fn read_fields(json: &str) -> Result<Fields<'_>, serde_json::Error> {
    match fast::fields::<false>(json) {
        Some(fields) => Ok(fields),
        None => serde_json::from_str::<SerdeFields<'_>>(json).map(Fields::from),
    }
}

impl<'a> Fields<'a> {
    fn is_usage(&self) -> bool {
        self.kind.and_then(json_str).is_some_and(|kind| kind == USAGE_TYPE)
    }

    fn validate(self, log_timestamp: Option<DateTime<Utc>>) -> LineOutcome<'a> {
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
            None => log_timestamp.ok_or(RejectReason::Missing("timestamp"))?,
            Some(raw) => json_timestamp(raw).ok_or_else(|| {
                invalid("timestamp", "an ISO-8601 UTC time or epoch milliseconds, in years 1970 to 9999")
            })?,
        };
        let method = optional_text(self.method, MAX_METHOD_LEN)
            .map_err(|()| invalid("method", "a string of at most 32 printable characters"))?;
        let resource = optional_text(self.resource, MAX_RESOURCE_LEN)
            .map_err(|()| invalid("resource", "a string of at most 2048 printable characters"))?;
        let latency_ms = match self.latency_ms {
            None => None,
            Some(raw) => Some(
                json_int(raw)
                    .and_then(|ms| u32::try_from(ms).ok())
                    .filter(|&ms| i32::try_from(ms).is_ok())
                    .ok_or_else(|| invalid("latencyMs", "a non-negative integer that fits in 32 bits"))?,
            ),
        };
        Ok(UsageEvent {
            request_id,
            key_id,
            timestamp,
            status_code,
            should_count,
            method,
            resource,
            latency_ms,
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
    // Four-digit years only: every day must have a `year=YYYY` partition and a `YYYY-MM-DD` bucket.
    (1970..=9999).contains(&at.naive_utc().year()).then_some(at)
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

/// The position of the next `"`, `\\` or control character at or after `at` (or the end), eight
/// bytes at a time: the classic bit trick flags bytes equal to (or below) a value, and the lowest
/// flag is always exact. Every JSON string scan of the hot path stops here.
#[must_use]
pub fn next_special(b: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    while let Some(chunk) = b.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let flags =
            below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1) | below(x, 0x20);
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while b.get(at).is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20) {
        at += 1;
    }
    at
}

/// A reader of [`Fields`] for the common case — a JSON object whose strings hold no escapes — that
/// declines (returns `None`) whenever it is not sure, leaving the line to serde_json. For any line it
/// accepts it gives exactly what serde_json would (checked by a property test), only faster.
mod fast {
    use super::{Fields, next_special};

    /// The fields of `json`, or `None` to let the general reader decide. With `ESCAPED`, `json` is
    /// the inside of a JSON string literal holding the object (quotes written `\\"`), read as it is,
    /// without unescaping; string values keep their `\\"` delimiters.
    pub(super) fn fields<const ESCAPED: bool>(json: &str) -> Option<Fields<'_>> {
        let mut fields = Fields::default();
        let (end, _) = object::<ESCAPED>(json, 0, &mut fields, None)?;
        (skip_ws::<ESCAPED>(json.as_bytes(), end) == json.len()).then_some(fields)
    }

    /// Reads the object starting at `json[at..]` (after white space) into `fields`, and returns
    /// where it ends (after its `}`); what follows is the caller's to judge. Given `message`, a
    /// `message` that is an object (Lambda's JSON log format) is read into it as well, rather than
    /// only checked and read again later; the flag says whether it was. The fields are written in
    /// place: they are large, and moving them around costs more than reading them.
    pub(super) fn object<'a, const ESCAPED: bool>(
        json: &'a str,
        at: usize,
        fields: &mut Fields<'a>,
        mut message: Option<&mut Fields<'a>>,
    ) -> Option<(usize, bool)> {
        let b = json.as_bytes();
        let mut message_read = false;
        let q = quote_len::<ESCAPED>();
        let mut seen = 0u16;
        let mut at = skip_ws::<ESCAPED>(b, at);
        if b.get(at) != Some(&b'{') {
            return None;
        }
        at = skip_ws::<ESCAPED>(b, at + 1);
        if b.get(at) == Some(&b'}') {
            at += 1;
        } else {
            loop {
                let (bit, key_end) = match known_key::<ESCAPED>(b, at) {
                    Some(known) => known,
                    None => {
                        let key_end = string_end::<ESCAPED>(b, at)?;
                        (field_bit(&json[at + q..key_end - q]), key_end)
                    }
                };
                at = skip_ws::<ESCAPED>(b, key_end);
                if b.get(at) != Some(&b':') {
                    return None;
                }
                let start = skip_ws::<ESCAPED>(b, at + 1);
                let end = if let (9, Some(inner), Some(b'{')) = (bit, message.as_deref_mut(), b.get(start)) {
                    message_read = true;
                    object::<ESCAPED>(json, start, inner, None)?.0
                } else {
                    value_end::<ESCAPED>(b, start, 0)?
                };
                let raw = &json[start..end];
                let value = if raw == "null" { None } else { Some(raw) };
                let slot = match bit {
                    0 => &mut fields.kind,
                    1 => &mut fields.request_id,
                    2 => &mut fields.key_id,
                    3 => &mut fields.timestamp,
                    4 => &mut fields.status_code,
                    5 => &mut fields.should_count,
                    6 => &mut fields.method,
                    7 => &mut fields.resource,
                    8 => &mut fields.latency_ms,
                    9 => &mut fields.message,
                    _ => &mut None,
                };
                if bit != u16::MAX {
                    if seen & (1 << bit) != 0 {
                        return None; // a duplicate field: serde_json's verdict
                    }
                    seen |= 1 << bit;
                    *slot = value;
                }
                at = skip_ws::<ESCAPED>(b, end);
                match b.get(at) {
                    Some(b',') => at = skip_ws::<ESCAPED>(b, at + 1),
                    Some(b'}') => {
                        at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        Some((at, message_read))
    }

    /// The keys of the fields read, each at its field's bit in [`Fields`].
    const FIELD_KEYS: [&str; 10] = [
        "type",
        "requestId",
        "keyId",
        "timestamp",
        "statusCode",
        "shouldCount",
        "method",
        "resource",
        "latencyMs",
        "message",
    ];

    /// The bit of the field a key names (`u16::MAX` for keys that name none).
    fn field_bit(key: &str) -> u16 {
        FIELD_KEYS
            .iter()
            .position(|&known| known == key)
            .and_then(|bit| u16::try_from(bit).ok())
            .unwrap_or(u16::MAX)
    }

    /// A key of the usage line recognized where it stands, by its first letter and then compared
    /// whole, quotes included (no scan for its end): its field's bit and the key's end. `None` leaves
    /// the key to be read as any string.
    fn known_key<const ESCAPED: bool>(b: &[u8], at: usize) -> Option<(u16, usize)> {
        let q = quote_len::<ESCAPED>();
        if !is_quote::<ESCAPED>(b, at) {
            return None;
        }
        let start = at + q;
        // Each call names its bit as a constant, so each comparison is of a known length.
        let known = |bit: u16| {
            let name = FIELD_KEYS[usize::from(bit)].as_bytes();
            let end = start + name.len();
            (b.get(start..end) == Some(name) && is_quote::<ESCAPED>(b, end)).then_some((bit, end + q))
        };
        match *b.get(start)? {
            b't' => known(0).or_else(|| known(3)),
            b'r' => known(1).or_else(|| known(7)),
            b'k' => known(2),
            b's' => known(4).or_else(|| known(5)),
            b'm' => known(6).or_else(|| known(9)),
            b'l' => known(8),
            _ => None,
        }
    }

    const fn quote_len<const ESCAPED: bool>() -> usize {
        if ESCAPED { 2 } else { 1 }
    }

    fn is_quote<const ESCAPED: bool>(b: &[u8], at: usize) -> bool {
        if ESCAPED { b.get(at..at + 2) == Some(b"\\\"") } else { b.get(at) == Some(&b'"') }
    }

    /// JSON white space; escaped, also `\\t`, `\\n` and `\\r`.
    pub(super) fn skip_ws<const ESCAPED: bool>(b: &[u8], mut at: usize) -> usize {
        loop {
            match b.get(at) {
                Some(b' ') => at += 1,
                Some(b'\t' | b'\n' | b'\r') if !ESCAPED => at += 1,
                Some(b'\\') if ESCAPED && matches!(b.get(at + 1), Some(b't' | b'n' | b'r')) => at += 2,
                _ => return at,
            }
        }
    }

    /// End (exclusive) of a string starting at `at`; `None` for escapes or control characters.
    fn string_end<const ESCAPED: bool>(b: &[u8], at: usize) -> Option<usize> {
        if !is_quote::<ESCAPED>(b, at) {
            return None;
        }
        let i = next_special(b, at + quote_len::<ESCAPED>());
        match *b.get(i)? {
            b'"' if !ESCAPED => Some(i + 1),
            b'\\' if ESCAPED && b.get(i + 1) == Some(&b'"') => Some(i + 2),
            _ => None, // another escape, a bare quote inside an escaped object, or a control character
        }
    }

    /// End (exclusive) of the value starting at `at`, validated as JSON; `None` when unsure.
    fn value_end<const ESCAPED: bool>(b: &[u8], at: usize, depth: u8) -> Option<usize> {
        match *b.get(at)? {
            b'"' | b'\\' => string_end::<ESCAPED>(b, at),
            b'{' | b'[' if depth < 8 => container_end::<ESCAPED>(b, at, depth + 1),
            b't' => literal_end(b, at, b"true"),
            b'f' => literal_end(b, at, b"false"),
            b'n' => literal_end(b, at, b"null"),
            b'-' | b'0'..=b'9' => number_end(b, at),
            _ => None,
        }
    }

    fn literal_end(b: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
        (b.get(at..at + literal.len())? == literal).then_some(at + literal.len())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number_end(b: &[u8], mut at: usize) -> Option<usize> {
        let digits = |from: usize| (from..).take_while(|&i| b.get(i).is_some_and(u8::is_ascii_digit)).count();
        if b.get(at) == Some(&b'-') {
            at += 1;
        }
        match b.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => at += digits(at),
            _ => return None,
        }
        if b.get(at) == Some(&b'.') {
            let n = digits(at + 1);
            if n == 0 {
                return None;
            }
            at += 1 + n;
        }
        if matches!(b.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(b.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            let n = digits(at);
            if n == 0 {
                return None;
            }
            at += n;
        }
        Some(at)
    }

    /// End of an object or array, every member validated.
    fn container_end<const ESCAPED: bool>(b: &[u8], at: usize, depth: u8) -> Option<usize> {
        let (close, object) = if b[at] == b'{' { (b'}', true) } else { (b']', false) };
        let mut i = skip_ws::<ESCAPED>(b, at + 1);
        if b.get(i) == Some(&close) {
            return Some(i + 1);
        }
        loop {
            if object {
                i = skip_ws::<ESCAPED>(b, string_end::<ESCAPED>(b, i)?);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_ws::<ESCAPED>(b, i + 1);
            }
            i = skip_ws::<ESCAPED>(b, value_end::<ESCAPED>(b, i, depth)?);
            match b.get(i) {
                Some(b',') => i = skip_ws::<ESCAPED>(b, i + 1),
                Some(&c) if c == close => return Some(i + 1),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

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
    use proptest::prelude::*;

    const LINE: &str = r#"{"type":"API_USAGE","requestId":"c6af9ac6-7b61-11e6-9a41-93e8deadbeef","keyId":"0123456789ab","timestamp":"2026-11-29T14:03:07.123Z","statusCode":200,"shouldCount":true,"method":"GET","resource":"/v1/items/{id}","latencyMs":42}"#;

    fn log_time() -> Option<DateTime<Utc>> {
        Some(parse_instant("2026-11-29T14:03:08.000Z").unwrap())
    }

    fn expected() -> UsageEvent<'static> {
        UsageEvent {
            request_id: "c6af9ac6-7b61-11e6-9a41-93e8deadbeef".into(),
            key_id: "0123456789ab".into(),
            timestamp: parse_instant("2026-11-29T14:03:07.123Z").unwrap(),
            status_code: 200,
            should_count: true,
            method: Some("GET".into()),
            resource: Some("/v1/items/{id}".into()),
            latency_ms: Some(42),
        }
    }

    fn rejected(line: &str) -> RejectReason {
        match parse_line(line, log_time()) {
            LineOutcome::Rejected(reason) => reason,
            other => panic!("expected a rejection for {line}, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_bare_line() {
        assert_eq!(parse_line(LINE, None), LineOutcome::Usage(expected()));
        assert_eq!(parse_line(&format!("  {LINE}\n"), None), LineOutcome::Usage(expected()));
    }

    #[test]
    fn reads_lambda_text_format() {
        let line = format!("2026-11-29T14:03:07.125Z\t8f5e5b43-1b2c-4a7e-9c1d-2f0e7d3b9a11\tINFO\t{LINE}\n");
        assert_eq!(parse_line(&line, None), LineOutcome::Usage(expected()));
    }

    #[test]
    fn reads_lambda_json_format_with_object_and_string_messages() {
        let object = format!(
            r#"{{"timestamp":"2026-11-29T14:03:07.125Z","level":"INFO","requestId":"8f5e5b43-1b2c","message":{LINE}}}"#
        );
        assert_eq!(parse_line(&object, None), LineOutcome::Usage(expected()));
        let string = format!(
            r#"{{"timestamp":"2026-11-29T14:03:07.125Z","level":"INFO","requestId":"8f5e5b43-1b2c","message":{}}}"#,
            serde_json::to_string(LINE).unwrap()
        );
        assert_eq!(parse_line(&string, None), LineOutcome::Usage(expected()));
    }

    #[test]
    fn skips_lines_that_are_not_usage_lines() {
        for line in [
            "START RequestId: 8f5e5b43 Version: $LATEST",
            "2026-11-29T14:03:07.125Z\t8f5e5b43\tINFO\tprocessing API_USAGE batch",
            r#"{"type":"OTHER","note":"API_USAGE"}"#,
            r#"{"level":"INFO","message":"flushing API_USAGE lines"}"#,
            r#"{"level":"INFO","message":{"type":"AUDIT","what":"API_USAGE"}}"#,
            "",
        ] {
            assert_eq!(parse_line(line, log_time()), LineOutcome::Skipped, "{line}");
        }
    }

    #[test]
    fn should_count_defaults_to_false_and_timestamp_to_the_log_event() {
        let line = r#"{"type":"API_USAGE","requestId":"r1","keyId":"k1","statusCode":204}"#;
        let LineOutcome::Usage(event) = parse_line(line, log_time()) else { panic!() };
        assert!(!event.should_count);
        assert_eq!(Some(event.timestamp), log_time());
        assert_eq!(event.tally(), Tally { successful_calls: 0, failed_calls: 0, usage_count: 1 });
    }

    #[test]
    fn accepts_epoch_milliseconds_and_offsets() {
        let ms =
            r#"{"type":"API_USAGE","requestId":"r","keyId":"k","statusCode":200,"timestamp":1795960987123}"#;
        let LineOutcome::Usage(event) = parse_line(ms, None) else { panic!() };
        assert_eq!(event.timestamp, parse_instant("2026-11-29T14:03:07.123Z").unwrap());
        let offset = r#"{"type":"API_USAGE","requestId":"r","keyId":"k","statusCode":200,"timestamp":"2026-11-29T15:03:07.123+01:00"}"#;
        let LineOutcome::Usage(event) = parse_line(offset, None) else { panic!() };
        assert_eq!(event.timestamp, parse_instant("2026-11-29T14:03:07.123Z").unwrap());
    }

    #[test]
    fn unescapes_strings_that_need_it() {
        let line =
            r#"{"type":"API_USAGE","requestId":"r\u002d1","keyId":"k","statusCode":200,"resource":"/a\"b"}"#;
        let LineOutcome::Usage(event) = parse_line(line, log_time()) else { panic!() };
        assert_eq!(event.request_id, "r-1");
        assert_eq!(event.resource.as_deref(), Some("/a\"b"));
    }

    #[test]
    fn rejects_contract_violations_with_a_precise_reason() {
        let base = r#""type":"API_USAGE","requestId":"r1","keyId":"k1""#;
        assert_eq!(rejected(r#"{"type":"API_USAGE","requestId":"r1","#), RejectReason::MalformedJson);
        assert_eq!(rejected(&format!("{{{base}}}")), RejectReason::Missing("statusCode"));
        assert_eq!(
            rejected(r#"{"type":"API_USAGE","keyId":"k1","statusCode":200}"#),
            RejectReason::Missing("requestId")
        );
        assert_eq!(
            rejected(r#"{"type":"API_USAGE","requestId":"r1","statusCode":200}"#),
            RejectReason::Missing("keyId")
        );
        for (extra, field) in [
            (r#""statusCode":"200""#, "statusCode"),
            (r#""statusCode":200.0"#, "statusCode"),
            (r#""statusCode":99"#, "statusCode"),
            (r#""statusCode":600"#, "statusCode"),
            (r#""statusCode":70000"#, "statusCode"),
            (r#""statusCode":200,"shouldCount":"true""#, "shouldCount"),
            (r#""statusCode":200,"shouldCount":1"#, "shouldCount"),
            (r#""statusCode":200,"timestamp":"yesterday""#, "timestamp"),
            (r#""statusCode":200,"timestamp":"2026-11-29T14:03:07""#, "timestamp"),
            (r#""statusCode":200,"timestamp":-1"#, "timestamp"),
            (r#""statusCode":200,"timestamp":99999999999999999"#, "timestamp"),
            (r#""statusCode":200,"latencyMs":-5"#, "latencyMs"),
            (r#""statusCode":200,"latencyMs":3000000000"#, "latencyMs"),
            (r#""statusCode":200,"method":7"#, "method"),
        ] {
            let line = format!("{{{base},{extra}}}");
            assert!(
                matches!(rejected(&line), RejectReason::Invalid { field: f, .. } if f == field),
                "{line}"
            );
        }
        for (line, field) in [
            (r#"{"type":"API_USAGE","requestId":"","keyId":"k","statusCode":200}"#, "requestId"),
            (r#"{"type":"API_USAGE","requestId":42,"keyId":"k","statusCode":200}"#, "requestId"),
            (r##"{"type":"API_USAGE","requestId":"r","keyId":"#epoch","statusCode":200}"##, "keyId"),
            (r#"{"type":"API_USAGE","requestId":"r\n","keyId":"k","statusCode":200}"#, "requestId"),
            (r#"{"type":"API_USAGE","requestId":"r","keyId":"a b","statusCode":200}"#, "keyId"),
        ] {
            assert!(matches!(rejected(line), RejectReason::Invalid { field: f, .. } if f == field), "{line}");
        }
    }

    #[test]
    fn a_line_without_any_timestamp_is_rejected() {
        let line = r#"{"type":"API_USAGE","requestId":"r1","keyId":"k1","statusCode":200}"#;
        assert_eq!(parse_line(line, None), LineOutcome::Rejected(RejectReason::Missing("timestamp")));
    }

    #[test]
    fn reasons_have_stable_codes() {
        assert_eq!(RejectReason::MalformedJson.code(), "malformed_json");
        assert_eq!(RejectReason::Missing("keyId").code(), "missing_keyId");
        assert_eq!(invalid("statusCode", "x").code(), "invalid_statusCode");
        assert_eq!(invalid("statusCode", "an integer").to_string(), "statusCode must be an integer");
    }

    fn arb_event() -> impl Strategy<Value = UsageEvent<'static>> {
        (
            "[ -~]{1,40}",
            "[0-9a-z]{12}|[A-Za-z0-9._-]{1,20}",
            0i64..253_402_300_799_999,
            100u16..=599,
            any::<bool>(),
            proptest::option::of("[A-Z]{3,7}"),
            proptest::option::of("/[ -~\u{e9}\u{4e2d}]{0,30}"),
            proptest::option::of(0u32..=i32::MAX as u32),
        )
            .prop_map(
                |(request_id, key_id, millis, status_code, should_count, method, resource, latency_ms)| {
                    UsageEvent {
                        request_id: request_id.into(),
                        key_id: key_id.into(),
                        timestamp: DateTime::from_timestamp_millis(millis).unwrap(),
                        status_code,
                        should_count,
                        method: method.map(Into::into),
                        resource: resource.map(Into::into),
                        latency_ms,
                    }
                },
            )
    }

    fn to_line(event: &UsageEvent<'_>, millis: bool) -> String {
        let mut object = serde_json::json!({
            "type": USAGE_TYPE,
            "requestId": event.request_id,
            "keyId": event.key_id,
            "statusCode": event.status_code,
            "shouldCount": event.should_count,
        });
        object["timestamp"] = if millis {
            event.timestamp.timestamp_millis().into()
        } else {
            crate::time::format_instant(event.timestamp).into()
        };
        if let Some(m) = &event.method {
            object["method"] = m.as_ref().into();
        }
        if let Some(r) = &event.resource {
            object["resource"] = r.as_ref().into();
        }
        if let Some(l) = event.latency_ms {
            object["latencyMs"] = l.into();
        }
        object.to_string()
    }

    /// What the general reader alone makes of a line (the oracle of the fast reader).
    fn serde_only(json: &str) -> Option<Vec<Option<String>>> {
        serde_json::from_str::<SerdeFields<'_>>(json).ok().map(|f| as_vec(&Fields::from(f)))
    }

    fn as_vec(f: &Fields<'_>) -> Vec<Option<String>> {
        [
            f.kind,
            f.request_id,
            f.key_id,
            f.timestamp,
            f.status_code,
            f.should_count,
            f.method,
            f.resource,
            f.latency_ms,
            f.message,
        ]
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
    }

    /// Whether a line holds something its escaped form writes with a backslash (other than quotes).
    fn bare_has_escape(line: &str) -> bool {
        line.chars().any(|c| c == '\\' || c.is_control())
    }

    fn json_fragment() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("type"),
            Just("requestId"),
            Just("keyId"),
            Just("timestamp"),
            Just("statusCode"),
            Just("shouldCount"),
            Just("method"),
            Just("resource"),
            Just("latencyMs"),
            Just("message"),
            Just("other"),
        ];
        let value = prop_oneof![
            "\"[ -~]{0,12}\"",
            "-?[0-9]{1,4}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
            Just("{\"a\":[1,{\"b\":null}]}".to_owned()),
            Just("[]".to_owned()),
            "[ -~]{0,6}",
        ];
        proptest::collection::vec((key, value, "[ \t\n]{0,2}"), 0..8).prop_map(|members| {
            let body: Vec<String> =
                members.into_iter().map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}")).collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest! {
        #[test]
        fn the_fast_reader_agrees_with_serde_whenever_it_answers(json in json_fragment(), cut in 0usize..200) {
            for text in [json.clone(), json.get(..cut.min(json.len())).unwrap_or("").to_owned()] {
                if let Some(fast) = fast::fields::<false>(&text) {
                    prop_assert_eq!(Some(as_vec(&fast)), serde_only(&text), "{}", text);
                }
            }
        }

        #[test]
        fn the_escaped_reader_agrees_with_parse_line_whenever_it_answers(
            event in arb_event(),
            shape in 0usize..3,
            cut in 0usize..400,
            junk in "[ \t\n\\\\\"{}:,a-z0-9\u{a0}]{0,6}",
            mangle in any::<bool>(),
        ) {
            let bare = to_line(&event, cut % 2 == 0);
            let line = match shape {
                0 => bare,
                1 => format!("2026-11-29T14:03:07.125Z\tabc-123\tINFO\t{bare}\n"),
                _ => format!(r#"{{"level":"INFO","requestId":"lambda-req","message":{bare}}}"#),
            };
            let line = if mangle {
                let mut cut_at = cut.min(line.len());
                while !line.is_char_boundary(cut_at) {
                    cut_at -= 1;
                }
                format!("{}{junk}{}", &line[..cut_at], &line[cut_at..])
            } else {
                line
            };
            let literal = serde_json::to_string(&line).unwrap();
            let escaped = &literal[1..literal.len() - 1];
            let expected = parse_line(&line, log_time());
            // Where a payload holds it: inside a literal, followed by the rest of the payload.
            let in_payload = format!(r#"{{"message":{literal},"id":"1"}}"#);
            match parse_escaped_message(&in_payload, 12, log_time()) {
                Some((answer, end)) => {
                    prop_assert_eq!(&answer, &expected, "{}", line);
                    prop_assert_eq!(end, 12 + escaped.len(), "{}", line);
                }
                None => prop_assert!(
                    matches!(parse_escaped_line(escaped, log_time()), None | Some(LineOutcome::Skipped)),
                    "declined in a payload what it reads alone: {}", line
                ),
            }
            if let Some(answer) = parse_escaped_line(escaped, log_time()) {
                prop_assert_eq!(answer, expected, "{}", line);
            } else {
                prop_assert!(mangle || line.contains('\\') || shape == 2 && bare_has_escape(&line), "declined a plain line: {}", line);
            }
        }

        #[test]
        fn the_fast_reader_handles_ordinary_usage_lines(mut event in arb_event()) {
            // Ordinary: no character that JSON escapes (made so rather than filtered, which would
            // reject most cases).
            let plain = |text: &str| text.replace(['"', '\\'], "_");
            event.request_id = plain(&event.request_id).into();
            event.resource = event.resource.map(|resource| plain(&resource).into());
            let line = to_line(&event, false);
            prop_assert!(!line.contains('\\'), "{}", line);
            prop_assert!(fast::fields::<false>(&line).is_some(), "{}", line);
        }

        #[test]
        fn control_characters_are_found_in_ascii_and_beyond(text in "[ -~\u{0}-\u{1f}\u{7f}-\u{a0}é]{0,12}") {
            prop_assert_eq!(has_control(&text), text.chars().any(char::is_control));
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = parse_line(&text, None);
        }

        #[test]
        fn never_panics_on_mangled_usage_lines(cut in 0usize..220, junk in "[\\\\\"{}\\[\\]:,\t0-9a-z]{0,8}") {
            let line = LINE.get(..cut.min(LINE.len())).unwrap_or(LINE).to_owned() + &junk;
            let _ = parse_line(&line, log_time());
            let wrapped = format!(r#"{{"level":"INFO","message":{}}}"#, serde_json::to_string(&line).unwrap());
            let _ = parse_line(&wrapped, log_time());
        }

        #[test]
        fn round_trips_every_valid_shape(event in arb_event(), millis in any::<bool>()) {
            let bare = to_line(&event, millis);
            let text = format!("2026-11-29T14:03:07.125Z\tabc-123\tINFO\t{bare}\n");
            let object = format!(r#"{{"level":"INFO","requestId":"lambda-req","message":{bare}}}"#);
            let string = format!(r#"{{"level":"INFO","message":{}}}"#, serde_json::to_string(&bare).unwrap());
            for line in [&bare, &text, &object, &string] {
                prop_assert_eq!(parse_line(line, None), LineOutcome::Usage(event.clone()), "{}", line);
            }
        }
    }
}
