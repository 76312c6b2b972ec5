//! The usage-line reader: finds a usage line's fields in a log message, in any of the three shapes
//! Lambda produces (bare, Lambda's text format, Lambda's JSON log format with the line as an object or
//! a string), and hands them to the contract's validation ([`UsageFields::validate`]).
//!
//! A line that is not a usage line is [`LineOutcome::Skipped`]. Two readers share the work: a fast
//! one for the shapes the backend really prints, which can even read a line while it is still
//! escaped inside a CloudWatch Logs payload, and serde_json for everything else. The fast reader
//! declines whatever it is not sure of, and property tests hold it to serde_json's answer.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use meter_model::usage::{USAGE_TYPE, UsageFields};
use meter_model::{LineOutcome, RejectReason};
use serde::Deserialize;
use serde_json::value::RawValue;

mod fast;
mod scan;

pub use scan::next_special;

static USAGE_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(USAGE_TYPE.as_bytes()));
static UNICODE_ESCAPE_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));

/// Whether a line, escaped or not, can be a usage line: it holds `API_USAGE`, or a `\u` escape that
/// could spell it (`"API_\u0055SAGE"` is the same JSON string). Most log lines are neither, and go
/// without any JSON parsing.
fn might_be_usage(text: &str) -> bool {
    USAGE_FINDER.find(text.as_bytes()).is_some() || UNICODE_ESCAPE_FINDER.find(text.as_bytes()).is_some()
}

/// Reads one log message. `log_timestamp` is the CloudWatch log event's timestamp, used when the line
/// carries none; without either, the line is rejected.
#[must_use]
pub fn parse_line(message: &str, log_timestamp: Option<DateTime<Utc>>) -> LineOutcome<'_> {
    if !might_be_usage(message) {
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
    // `API_USAGE` needs no escaping, so the escaped line contains it (or a `\u` escape) exactly when
    // the line does.
    if !might_be_usage(escaped) {
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
    let (mut fields, mut inner) = (UsageFields::default(), UsageFields::default());
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

/// The general reader of [`UsageFields`]: serde_json, for any valid JSON.
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

impl<'a> From<SerdeFields<'a>> for UsageFields<'a> {
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

/// Reads a JSON object into [`UsageFields`]: the fast reader for the common case, serde_json for the rest.
fn read_fields(json: &str) -> Result<UsageFields<'_>, serde_json::Error> {
    match fast::fields::<false>(json) {
        Some(fields) => Ok(fields),
        None => serde_json::from_str::<SerdeFields<'_>>(json).map(UsageFields::from),
    }
}

#[cfg(test)]
mod tests;
