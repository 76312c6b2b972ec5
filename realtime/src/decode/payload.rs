//! A decoded CloudWatch Logs payload, and its general reader (serde_json), which reads every valid
//! payload and is the oracle of the fast envelope reader.

use std::borrow::Cow;

use meter_model::LineOutcome;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::DecodeError;

/// The kind of a CloudWatch Logs payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Log events.
    Data,
    /// A health check sent when a subscription is created; carries no usage.
    Control,
}

/// A decoded payload; strings borrow from the inflated bytes where they need no unescaping.
#[derive(Debug)]
pub struct LogsPayload<'a> {
    /// Data or control.
    pub message_type: MessageType,
    /// The source log group.
    pub log_group: Cow<'a, str>,
    /// The source log stream.
    pub log_stream: Cow<'a, str>,
    /// The log events, in delivery order.
    pub log_events: Vec<LogEvent<'a>>,
    /// Whether the payload had to be repaired to be read at all (bytes that are not UTF-8, raw control
    /// characters): each became U+FFFD, and a usage line holding one is rejected, not billed.
    pub repaired: bool,
}

/// One CloudWatch log event.
#[derive(Debug)]
pub struct LogEvent<'a> {
    /// Its id: a string of digits in AWS (some emulators write a number; both are read).
    pub id: Cow<'a, str>,
    /// Its timestamp, epoch milliseconds; [`LogEvent::INVALID_TIME`] when the payload's value is not
    /// one.
    pub timestamp: i64,
    /// The log line as the payload holds it: a JSON string literal, still escaped. Most lines are
    /// looked at without ever being unescaped (see [`crate::usage_line::parse_escaped_line`]).
    pub(super) raw_message: &'a str,
    /// What the line is, when the payload's reader already read it while finding its end: a usage
    /// event or a line to skip, never a rejection (those are read again, to be kept as text).
    pub(super) outcome: Option<LineOutcome<'a>>,
}

impl<'a> LogEvent<'a> {
    /// The timestamp of a log event whose payload value is not a time in whole milliseconds.
    pub const INVALID_TIME: i64 = i64::MIN;

    /// When the event was logged, if its timestamp is a time.
    #[must_use]
    pub fn log_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_millis(self.timestamp)
    }

    /// What the line is, when the payload's reader already knows: a usage event or a line to skip.
    #[must_use]
    pub fn known_outcome(&self) -> Option<&LineOutcome<'a>> {
        self.outcome.as_ref()
    }

    /// The log line as the payload holds it, still escaped (without the surrounding quotes).
    #[must_use]
    pub fn escaped(&self) -> &str {
        &self.raw_message[1..self.raw_message.len() - 1]
    }

    /// The log line, unescaped into `scratch` when it holds escapes (so one buffer serves a whole
    /// payload without an allocation per line).
    pub fn message<'s>(&'s self, scratch: &'s mut String) -> &'s str {
        let inner = self.escaped();
        if !inner.contains('\\') {
            return inner;
        }
        super::unescape::unescape_into(inner, scratch);
        scratch
    }
}

/// The general reader of payloads (serde_json): every valid payload, and the oracle of the fast reader
/// that [`super::parse_payload`] tries first.
pub fn parse_payload_general(json: &[u8]) -> Result<LogsPayload<'_>, DecodeError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw<'a> {
        #[serde(borrow)]
        message_type: Cow<'a, str>,
        #[serde(borrow, default)]
        log_group: Cow<'a, str>,
        #[serde(borrow, default)]
        log_stream: Cow<'a, str>,
        #[serde(borrow, default)]
        log_events: Vec<RawEvent<'a>>,
    }
    #[derive(Deserialize)]
    struct RawEvent<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
        #[serde(borrow)]
        timestamp: &'a RawValue,
        #[serde(borrow)]
        message: &'a RawValue,
    }
    let raw: Raw<'_> = serde_json::from_slice(json).map_err(DecodeError::Json)?;
    let message_type = match raw.message_type.as_ref() {
        "DATA_MESSAGE" => MessageType::Data,
        "CONTROL_MESSAGE" => MessageType::Control,
        other => {
            return Err(DecodeError::Json(serde::de::Error::custom(format!(
                "unknown messageType {other:?}"
            ))));
        }
    };
    let mut log_events = Vec::with_capacity(raw.log_events.len());
    for event in raw.log_events {
        let text = event.id.get();
        let id = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => Cow::Borrowed(inner),
            None => Cow::Borrowed(text),
        };
        let raw_message = event.message.get();
        if !raw_message.starts_with('"') {
            return Err(DecodeError::Json(serde::de::Error::custom("a log event's message is not a string")));
        }
        // A time that is not whole milliseconds (1e30, "soon") spoils its own event, not the delivery.
        let timestamp = event.timestamp.get().parse().unwrap_or(LogEvent::INVALID_TIME);
        log_events.push(LogEvent { id, timestamp, raw_message, outcome: None });
    }
    Ok(LogsPayload {
        message_type,
        log_group: raw.log_group,
        log_stream: raw.log_stream,
        log_events,
        repaired: false,
    })
}
