//! Decoding CloudWatch Logs subscription payloads: base64, gzip (capped before and while inflating,
//! so a hostile or broken payload cannot exhaust memory) and the payload's JSON.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use meter_model::LineOutcome;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest compressed payload accepted. Lambda's asynchronous invocations (how CloudWatch Logs calls
/// the processor) carry at most 1 MiB, and Firehose records at most 1,000 KiB.
pub const MAX_COMPRESSED_BYTES: usize = 1 << 20;
/// Largest inflated payload accepted: CloudWatch Logs batches hold at most 1 MiB of log events, so
/// with JSON framing a real payload stays far below this.
pub const MAX_INFLATED_BYTES: usize = 16 << 20;

/// A payload that cannot be decoded. Retrying cannot help; the archive path keeps such data in
/// Firehose's error output.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The Lambda event is not `{"awslogs":{"data":"…"}}`.
    #[error("not a CloudWatch Logs subscription event (expected {{\"awslogs\":{{\"data\":…}}}}): {0}")]
    NotSubscriptionEvent(serde_json::Error),
    /// The data is not base64.
    #[error("the payload is not valid base64")]
    Base64,
    /// The compressed payload is over the cap.
    #[error("the compressed payload has {size} bytes, over the cap of {MAX_COMPRESSED_BYTES}")]
    CompressedTooLarge {
        /// Its size.
        size: usize,
    },
    /// The payload inflates past the cap.
    #[error("the payload inflates past the cap of {MAX_INFLATED_BYTES} bytes")]
    InflatedTooLarge,
    /// The payload is not (complete) gzip.
    #[error("the payload is not valid gzip: {0}")]
    Gzip(std::io::Error),
    /// The inflated payload is not CloudWatch Logs JSON.
    #[error("the payload is not CloudWatch Logs JSON: {0}")]
    Json(serde_json::Error),
}

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
}

/// One CloudWatch log event.
#[derive(Debug)]
pub struct LogEvent<'a> {
    /// Its id: a string of digits in AWS (some emulators write a number; both are read).
    pub id: Cow<'a, str>,
    /// Its ingestion timestamp, epoch milliseconds.
    pub timestamp: i64,
    /// The log line as the payload holds it: a JSON string literal, still escaped. Most lines are
    /// looked at without ever being unescaped (see [`meter_model::parse_escaped_line`]).
    raw_message: &'a str,
    /// What the line is, when the payload's reader already read it while finding its end: a usage
    /// event or a line to skip, never a rejection (those are read again, to be kept as text).
    outcome: Option<LineOutcome<'a>>,
}

impl<'a> LogEvent<'a> {
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
        unescape_into(inner, scratch);
        scratch
    }
}

/// Unescapes the inside of a JSON string literal that the JSON parser has already accepted. A lone
/// UTF-16 surrogate, which JSON's grammar lets through, becomes U+FFFD.
fn unescape_into(inner: &str, scratch: &mut String) {
    // Work on bytes (runs copied whole, escapes one byte each) and check UTF-8 once at the end; the
    // buffer's capacity is kept from line to line.
    let mut out = std::mem::take(scratch).into_bytes();
    out.clear();
    out.reserve(inner.len());
    // Usage lines escape every quote, so escapes are dense: a plain scan beats searching for each.
    let bytes = inner.as_bytes();
    let mut run_start = 0;
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            at += 1;
            continue;
        }
        out.extend_from_slice(&bytes[run_start..at]);
        let used = match bytes.get(at + 1) {
            Some(b'n') => simple(&mut out, b'\n'),
            Some(b't') => simple(&mut out, b'\t'),
            Some(b'r') => simple(&mut out, b'\r'),
            Some(b'b') => simple(&mut out, 0x08),
            Some(b'f') => simple(&mut out, 0x0c),
            Some(b'u') => {
                let (ch, used) = unicode_escape(&inner[at + 1..]);
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                used
            }
            // `"`, `\\` and `/`: the JSON parser admits no other escape.
            Some(&other) => simple(&mut out, other),
            None => {
                out.extend_from_slice("\u{fffd}".as_bytes());
                0
            }
        };
        at += 1 + used;
        run_start = at;
    }
    out.extend_from_slice(&bytes[run_start..]);
    *scratch = String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

fn simple(out: &mut Vec<u8>, byte: u8) -> usize {
    out.push(byte);
    1
}

/// Reads `uXXXX` (and a following `\\uXXXX` low surrogate): the character and the bytes used.
fn unicode_escape(escaped: &str) -> (char, usize) {
    let hex = |at: usize| escaped.get(at..at + 4).and_then(|h| u32::from_str_radix(h, 16).ok());
    let Some(unit) = hex(1) else { return ('\u{fffd}', 1) };
    if (0xD800..0xDC00).contains(&unit)
        && escaped.get(5..7) == Some("\\u")
        && let Some(low) = hex(7).filter(|low| (0xDC00..0xE000).contains(low))
    {
        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
        return (char::from_u32(code).unwrap_or('\u{fffd}'), 11);
    }
    (char::from_u32(unit).unwrap_or('\u{fffd}'), 5)
}

/// Takes the gzip bytes out of a Lambda subscription event, `{"awslogs":{"data":"<base64>"}}`.
pub fn subscription_data(event_json: &[u8]) -> Result<Vec<u8>, DecodeError> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        awslogs: AwsLogs<'a>,
    }
    #[derive(Deserialize)]
    struct AwsLogs<'a> {
        data: &'a str,
    }
    let event: Event<'_> = serde_json::from_slice(event_json).map_err(DecodeError::NotSubscriptionEvent)?;
    decode_base64(event.awslogs.data)
}

/// Decodes base64, refusing before decoding anything that would exceed the compressed cap.
pub fn decode_base64(data: &str) -> Result<Vec<u8>, DecodeError> {
    let size = base64::decoded_len_estimate(data.len());
    if size > MAX_COMPRESSED_BYTES + 2 {
        return Err(DecodeError::CompressedTooLarge { size });
    }
    STANDARD.decode(data.trim()).map_err(|_| DecodeError::Base64)
}

/// Inflates gzip (one or more members), stopping as soon as the output passes the cap.
///
/// What CloudWatch Logs sends, one member whose trailer states its size, is inflated whole by
/// libdeflate (about 1.4 times as fast as streaming inflation, and inflation is the largest single
/// cost of a delivery); anything else, and every error, goes through the streaming decoder.
pub fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if compressed.len() > MAX_COMPRESSED_BYTES {
        return Err(DecodeError::CompressedTooLarge { size: compressed.len() });
    }
    match whole::single_member(compressed) {
        Some(inflated) => Ok(inflated),
        None => gunzip_streaming(compressed),
    }
}

fn gunzip_streaming(compressed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut inflated = Vec::with_capacity(compressed.len().saturating_mul(8).min(MAX_INFLATED_BYTES));
    let limit = u64::try_from(MAX_INFLATED_BYTES).unwrap_or(u64::MAX) + 1;
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut inflated)
        .map_err(DecodeError::Gzip)?;
    if inflated.len() > MAX_INFLATED_BYTES {
        return Err(DecodeError::InflatedTooLarge);
    }
    Ok(inflated)
}

/// Inflation of a whole single-member gzip buffer into a buffer of the size its trailer states.
mod whole {
    #![allow(unsafe_code)]

    use super::MAX_INFLATED_BYTES;

    /// The inflated bytes when `compressed` is exactly one valid gzip member of at most
    /// [`MAX_INFLATED_BYTES`]; `None` for anything else, which the streaming decoder then judges.
    /// libdeflate checks the member's CRC-32 and size, so the bytes are the streaming decoder's.
    pub(super) fn single_member(compressed: &[u8]) -> Option<Vec<u8>> {
        let trailer = compressed.len().checked_sub(4).and_then(|at| compressed.get(at..))?;
        let stated = usize::try_from(u32::from_le_bytes(trailer.try_into().ok()?)).ok()?;
        if stated > MAX_INFLATED_BYTES {
            return None;
        }
        // Not zeroed first: libdeflate only writes to the output, from its start.
        let mut inflated = Vec::<u8>::with_capacity(stated);
        let decompressor = Decompressor::new()?;
        let (mut read, mut written) = (0usize, 0usize);
        // SAFETY: the decompressor is live; the input and output pointers and lengths come from
        // buffers that outlive the call, and libdeflate writes at most `stated` bytes.
        let result = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                decompressor.0,
                compressed.as_ptr().cast(),
                compressed.len(),
                inflated.spare_capacity_mut().as_mut_ptr().cast(),
                stated,
                &raw mut read,
                &raw mut written,
            )
        };
        // Trailing bytes (a second member, or garbage) are the streaming decoder's to judge.
        if result != libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            || read != compressed.len()
            || written != stated
        {
            return None;
        }
        // SAFETY: on success libdeflate has written `written` (≤ capacity) bytes from the start.
        unsafe { inflated.set_len(written) };
        Some(inflated)
    }

    /// An owned libdeflate decompressor (about 10 KB; one per call keeps this free of shared state).
    struct Decompressor(*mut libdeflate_sys::libdeflate_decompressor);

    impl Decompressor {
        fn new() -> Option<Self> {
            // SAFETY: no preconditions; a null result (out of memory) is handled.
            let raw = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
            (!raw.is_null()).then_some(Self(raw))
        }
    }

    impl Drop for Decompressor {
        fn drop(&mut self) {
            // SAFETY: allocated by `libdeflate_alloc_decompressor` and freed only here.
            unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0) }
        }
    }
}

/// Parses an inflated payload.
pub fn parse_payload(json: &[u8]) -> Result<LogsPayload<'_>, DecodeError> {
    if let Some(payload) = std::str::from_utf8(json).ok().and_then(envelope::read) {
        return Ok(payload);
    }
    parse_payload_general(json)
}

/// The general reader of payloads (serde_json): every valid payload, and the oracle of the fast reader
/// that [`parse_payload`] tries first.
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
        timestamp: i64,
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
        log_events.push(LogEvent { id, timestamp: event.timestamp, raw_message, outcome: None });
    }
    Ok(LogsPayload { message_type, log_group: raw.log_group, log_stream: raw.log_stream, log_events })
}

/// A reader of payloads in the compact shape CloudWatch Logs writes, which finds each message's end
/// in one scan of its escaped text. It declines (`None`) anything it is not sure of: other white
/// space, unknown or repeated fields, escapes outside messages. Whenever it answers, the answer is
/// the general reader's (checked by a property test).
mod envelope {
    use std::borrow::Cow;

    use meter_model::LineOutcome;

    use super::{LogEvent, LogsPayload, MessageType};

    struct Cursor<'a> {
        text: &'a str,
        at: usize,
    }

    impl<'a> Cursor<'a> {
        fn peek(&self) -> Option<u8> {
            self.text.as_bytes().get(self.at).copied()
        }

        fn eat(&mut self, byte: u8) -> Option<()> {
            (self.peek()? == byte).then(|| self.at += 1)
        }

        /// A string without escapes; its contents.
        fn plain_string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.at;
            self.at = meter_model::next_special(self.text.as_bytes(), self.at);
            self.eat(b'"')?;
            Some(&self.text[start..self.at - 1])
        }

        /// A string with any valid escapes; the whole literal, quotes included.
        fn string_literal(&mut self) -> Option<&'a str> {
            let start = self.at;
            self.eat(b'"')?;
            let b = self.text.as_bytes();
            loop {
                self.at = meter_model::next_special(b, self.at);
                match *b.get(self.at)? {
                    b'"' => {
                        self.at += 1;
                        return Some(&self.text[start..self.at]);
                    }
                    b'\\' => match *b.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                        b'u' => {
                            let hex = b.get(self.at + 2..self.at + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 6;
                        }
                        _ => return None,
                    },
                    _ => return None, // a control character
                }
            }
        }

        /// An integer as serde_json reads an `i64`: optional minus, digits, no leading zeros.
        fn integer(&mut self) -> Option<&'a str> {
            let start = self.at;
            if self.peek() == Some(b'-') {
                self.at += 1;
            }
            let digits_start = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            let digits = &self.text[digits_start..self.at];
            let valid = !digits.is_empty() && (digits == "0" || !digits.starts_with('0'));
            let next_is_number = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
            (valid && !next_is_number).then(|| &self.text[start..self.at])
        }

        /// `{"k":v,...}`, each member read by `member` given its key.
        fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
            self.sequence(b'{', b'}', |c| {
                let key = c.plain_string()?;
                c.eat(b':')?;
                member(c, key)
            })
        }

        /// `[v,...]`, each item read by `item`.
        fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
            self.sequence(b'[', b']', item)
        }

        /// `open`, items separated by commas, `close`.
        fn sequence(
            &mut self,
            open: u8,
            close: u8,
            mut item: impl FnMut(&mut Self) -> Option<()>,
        ) -> Option<()> {
            self.eat(open)?;
            if self.eat(close).is_some() {
                return Some(());
            }
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.at += 1,
                    c if c == close => {
                        self.at += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }
    }

    fn once(seen: &mut u8, bit: u8) -> Option<()> {
        (*seen & bit == 0).then(|| *seen |= bit)
    }

    pub(super) fn read(text: &str) -> Option<LogsPayload<'_>> {
        let mut cursor = Cursor { text, at: 0 };
        let (mut seen, mut message_type, mut log_group, mut log_stream) = (0u8, None, "", "");
        // Sized for typical log lines (a usage line's log event takes 300–500 bytes), so that the
        // vector rarely grows while events are read.
        let mut log_events = Vec::with_capacity(text.len() / 256);
        cursor.object(|c, key| match key {
            "messageType" => {
                once(&mut seen, 1)?;
                message_type = Some(match c.plain_string()? {
                    "DATA_MESSAGE" => MessageType::Data,
                    "CONTROL_MESSAGE" => MessageType::Control,
                    _ => return None,
                });
                Some(())
            }
            "owner" => once(&mut seen, 2).and_then(|()| c.plain_string()).map(drop),
            "logGroup" => {
                once(&mut seen, 4)?;
                log_group = c.plain_string()?;
                Some(())
            }
            "logStream" => {
                once(&mut seen, 8)?;
                log_stream = c.plain_string()?;
                Some(())
            }
            "subscriptionFilters" => {
                once(&mut seen, 16)?;
                c.array(|c| c.plain_string().map(drop))
            }
            "logEvents" => {
                once(&mut seen, 32)?;
                c.array(|c| {
                    let (mut got, mut id, mut timestamp, mut raw_message) = (0u8, None, None, None);
                    let mut outcome = None;
                    c.object(|c, key| match key {
                        "id" => {
                            once(&mut got, 1)?;
                            id = Some(if c.peek()? == b'"' { c.plain_string()? } else { c.integer()? });
                            Some(())
                        }
                        "timestamp" => {
                            once(&mut got, 2)?;
                            timestamp = Some(c.integer()?.parse().ok()?);
                            Some(())
                        }
                        "message" => {
                            once(&mut got, 4)?;
                            // A usage line is read here, where its end is found; other lines are
                            // only scanned to their end. Should the log time come later (it comes
                            // first in what CloudWatch Logs writes), a line that needs it is
                            // rejected here, and so read again later.
                            let start = c.at;
                            let at = timestamp.and_then(chrono::DateTime::from_timestamp_millis);
                            let read_ahead = (c.peek()? == b'"')
                                .then(|| meter_model::parse_escaped_message(c.text, start + 1, at))
                                .flatten();
                            match read_ahead {
                                Some((line @ (LineOutcome::Usage(_) | LineOutcome::Skipped), end))
                                    if c.text.as_bytes().get(end) == Some(&b'"') =>
                                {
                                    c.at = end + 1;
                                    raw_message = Some(&c.text[start..c.at]);
                                    outcome = Some(line);
                                }
                                _ => raw_message = Some(c.string_literal()?),
                            }
                            Some(())
                        }
                        _ => None,
                    })?;
                    log_events.push(LogEvent {
                        id: Cow::Borrowed(id?),
                        timestamp: timestamp?,
                        raw_message: raw_message?,
                        outcome,
                    });
                    Some(())
                })
            }
            _ => None,
        })?;
        if cursor.at != text.len() {
            return None;
        }
        Some(LogsPayload {
            message_type: message_type?,
            log_group: Cow::Borrowed(log_group),
            log_stream: Cow::Borrowed(log_stream),
            log_events,
        })
    }
}

/// Encodes a payload as CloudWatch Logs delivers it (gzip, then base64 in a Lambda event). For
/// fixtures, the simulator and tests.
pub fn encode_subscription_event(payload_json: &[u8]) -> String {
    let gz = gzip(payload_json);
    serde_json::json!({ "awslogs": { "data": STANDARD.encode(gz) } }).to_string()
}

/// Gzips bytes (fast level, as CloudWatch Logs does).
#[must_use]
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn summary(payload: &LogsPayload<'_>) -> (MessageType, String, String, Vec<(String, i64, String)>) {
        let events = payload
            .log_events
            .iter()
            .map(|e| (e.id.to_string(), e.timestamp, e.raw_message.to_owned()))
            .collect();
        (payload.message_type, payload.log_group.to_string(), payload.log_stream.to_string(), events)
    }

    fn payload_text() -> impl Strategy<Value = String> {
        let usage =
            r#"{"type":"API_USAGE","requestId":"r-1","keyId":"k1","statusCode":200,"shouldCount":true}"#;
        let message = prop_oneof![
            "[ -~]{0,20}",
            "\\PC{0,10}",
            Just("{\"type\":\"API_USAGE\",\"a\":\"\\b\"}".to_owned()),
            // Usage lines in the three shapes, whole or with a character of JSON or escape put in.
            (0usize..3, 0usize..120, "[ \t\n\\\\\"{}:,a-z0-9\u{1}]{0,2}").prop_map(
                move |(shape, cut, junk)| {
                    let line = match shape {
                        0 => usage.to_owned(),
                        1 => format!("2026-11-30T14:03:07.125Z\tabc\tINFO\t{usage}\n"),
                        _ => format!(r#"{{"level":"INFO","message":{usage}}}"#),
                    };
                    let cut = (cut * line.len() / 100).min(line.len());
                    format!("{}{junk}{}", &line[..cut], &line[cut..])
                }
            ),
        ];
        let event =
            (any::<bool>(), 0u64..u64::MAX, prop_oneof![any::<i64>(), 0i64..4_000_000_000_000], message)
                .prop_map(|(numeric, id, ts, m)| {
                    let id =
                        if numeric { serde_json::json!(id) } else { serde_json::json!(format!("{id:056}")) };
                    // In the order CloudWatch Logs writes, so that lines are read where they stand.
                    format!(r#"{{"id":{id},"timestamp":{ts},"message":{}}}"#, serde_json::json!(m))
                });
        (prop_oneof![Just("DATA_MESSAGE"), Just("CONTROL_MESSAGE"), Just("OTHER")], "[a-z/$\\[\\]]{0,12}", proptest::collection::vec(event, 0..6))
            .prop_map(|(kind, stream, events)| {
                format!(
                    r#"{{"messageType":"{kind}","owner":"123456789012","logGroup":"/aws/lambda/api","logStream":{},"subscriptionFilters":["meter"],"logEvents":[{}]}}"#,
                    serde_json::json!(stream),
                    events.join(",")
                )
            })
    }

    proptest! {
        #[test]
        fn next_special_finds_the_first_quote_backslash_or_control(bytes in proptest::collection::vec(any::<u8>(), 0..40), from in 0usize..40) {
            let from = from.min(bytes.len());
            let expected = (from..bytes.len()).find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f)).unwrap_or(bytes.len());
            prop_assert_eq!(meter_model::usage::next_special(&bytes, from), expected);
        }

        #[test]
        fn the_envelope_reader_agrees_with_serde_whenever_it_answers(text in payload_text(), cut in 0usize..600, junk in "[ ,:{}\\[\\]\"0-9a-z\\\\]{0,3}") {
            let mut cut_at = cut.min(text.len());
            while !text.is_char_boundary(cut_at) {
                cut_at -= 1;
            }
            let mangled = format!("{}{junk}{}", &text[..cut_at], &text[cut_at..]);
            for candidate in [&text, &mangled] {
                if let Some(fast) = envelope::read(candidate) {
                    let general = parse_payload_general(candidate.as_bytes()).map(|p| summary(&p));
                    prop_assert_eq!(Some(summary(&fast)), general.ok(), "{}", candidate);
                    // A line read while its end was found is read as the general parser reads it.
                    let mut scratch = String::new();
                    for event in &fast.log_events {
                        if let Some(known) = event.known_outcome() {
                            let at = chrono::DateTime::from_timestamp_millis(event.timestamp);
                            prop_assert_eq!(known, &meter_model::parse_line(event.message(&mut scratch), at));
                        }
                    }
                }
            }
            if !text.contains("OTHER") {
                prop_assert!(envelope::read(&text).is_some(), "declined a compact payload: {}", text);
            }
        }

        #[test]
        fn unescaping_matches_serde_json(text in "\\PC{0,60}|[\\\\\"\\t\\n\\u{1}\\u{1f600}a-z]{0,30}") {
            let literal = serde_json::to_string(&text).unwrap();
            let mut scratch = String::new();
            let event = LogEvent { id: Cow::Borrowed("1"), timestamp: 0, raw_message: &literal, outcome: None };
            prop_assert_eq!(event.message(&mut scratch), text.as_str());
        }
    }

    #[test]
    fn unescapes_every_json_escape() {
        let literal = r#""a\"b\\c\/d\be\ff\ng\rh\ti\u00e9\ud83d\ude00\ud800x""#;
        let mut scratch = String::new();
        let event = LogEvent { id: Cow::Borrowed("1"), timestamp: 0, raw_message: literal, outcome: None };
        assert_eq!(event.message(&mut scratch), "a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti\u{e9}\u{1f600}\u{fffd}x");
    }

    #[test]
    fn usage_lines_are_read_while_their_end_is_found() {
        let usage =
            r#"{"type":"API_USAGE","requestId":"r-1","keyId":"k1","statusCode":200,"shouldCount":true}"#;
        let lines = [
            usage.to_owned(),
            format!("2026-11-30T14:03:07.125Z\tabc\tINFO\t{usage}\n"),
            format!(r#"{{"level":"INFO","message":{usage}}}"#),
            "REPORT RequestId: 1\tDuration: 1 ms".to_owned(),
            r#"{"type":"API_USAGE","requestId":"r-2","keyId":"k1","statusCode":"200"}"#.to_owned(),
        ];
        // In the order CloudWatch Logs writes: the log time before the message.
        let events: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(r#"{{"id":"{i}","timestamp":1796047400000,"message":{}}}"#, serde_json::json!(m))
            })
            .collect();
        let json = format!(
            r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{}]}}"#,
            events.join(",")
        );
        let payload = parse_payload(json.as_bytes()).unwrap();
        let known: Vec<_> = payload
            .log_events
            .iter()
            .map(|e| e.known_outcome().map(|o| matches!(o, LineOutcome::Usage(_))))
            .collect();
        // Usage lines are read; other lines and rejected usage lines are left to the line reader.
        assert_eq!(known, [Some(true), Some(true), Some(true), None, None]);
        let mut scratch = String::new();
        assert_eq!(payload.log_events[1].message(&mut scratch), lines[1]);
    }

    #[test]
    fn messages_must_be_strings() {
        let json = br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":42}]}"#;
        assert!(matches!(parse_payload(json), Err(DecodeError::Json(_))));
    }

    #[test]
    fn string_and_numeric_event_ids_are_both_read() {
        let json = br#"{"messageType":"DATA_MESSAGE","logGroup":"g","logStream":"s","logEvents":[
            {"id":"37199773694386416923437464382918237183398758046318374912","timestamp":1,"message":"a"},
            {"id":42,"timestamp":2,"message":"b"}]}"#;
        let payload = parse_payload(json).unwrap();
        assert_eq!(payload.log_events[0].id, "37199773694386416923437464382918237183398758046318374912");
        assert_eq!(payload.log_events[1].id, "42");
        let mut scratch = String::new();
        assert_eq!(payload.log_events[1].message(&mut scratch), "b");
    }

    #[test]
    fn inflation_is_capped() {
        let bomb = gzip(&vec![b'a'; MAX_INFLATED_BYTES + 10]);
        assert!(bomb.len() < MAX_COMPRESSED_BYTES, "a real bomb: small compressed, huge inflated");
        assert!(matches!(gunzip(&bomb), Err(DecodeError::InflatedTooLarge)));
    }

    #[test]
    fn oversized_base64_is_refused_before_decoding() {
        let huge = "A".repeat(MAX_COMPRESSED_BYTES * 2);
        assert!(matches!(decode_base64(&huge), Err(DecodeError::CompressedTooLarge { .. })));
    }

    #[test]
    fn members_after_the_first_and_trailing_bytes_are_not_lost() {
        let (a, b) = (gzip(b"first member "), gzip(b"second member"));
        assert_eq!(gunzip(&[a.clone(), b].concat()).unwrap(), b"first member second member");
        assert!(whole::single_member(&[a.clone(), a.clone()].concat()).is_none());
        assert!(matches!(gunzip(&[a, b"trailing".to_vec()].concat()), Err(DecodeError::Gzip(_))));
    }

    proptest! {
        #[test]
        fn whole_inflation_agrees_with_streaming(data in proptest::collection::vec(any::<u8>(), 0..3000), at in any::<usize>(), byte in any::<u8>(), corrupt in any::<bool>()) {
            // Repetitive data, so that the stream holds back-references and not only literals.
            let data = data.repeat(3);
            let mut gz = gzip(&data);
            if corrupt {
                let at = at % gz.len();
                gz[at] = byte;
            }
            if let Some(whole) = whole::single_member(&gz) {
                prop_assert_eq!(Some(whole), gunzip_streaming(&gz).ok());
            } else {
                prop_assert!(corrupt, "declined a valid member");
            }
        }
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let gz = gzip(br#"{"messageType":"DATA_MESSAGE","logEvents":[]}"#);
        assert!(matches!(gunzip(&gz[..gz.len() - 6]), Err(DecodeError::Gzip(_))));
        assert!(matches!(gunzip(b"not gzip at all"), Err(DecodeError::Gzip(_))));
    }
}
