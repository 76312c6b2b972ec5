//! The fast reader of usage lines: the shapes the backend really prints, read in one walk, even while
//! still escaped inside a CloudWatch Logs payload.
//!
//! A reader of [`Fields`] for the common case — a JSON object whose strings hold no escapes — that
//! declines (returns `None`) whenever it is not sure, leaving the line to serde_json. For any line it
//! accepts it gives exactly what serde_json would (checked by a property test), only faster.

use meter_model::usage::UsageFields as Fields;

use super::next_special;

/// The fields of `json`, or `None` to let the general reader decide. With `ESCAPED`, `json` is
/// the inside of a JSON string literal holding the object (quotes written `\\"`), read as it is,
/// without unescaping; string values keep their `\\"` delimiters.
pub(crate) fn fields<const ESCAPED: bool>(json: &str) -> Option<Fields<'_>> {
    let mut fields = Fields::default();
    let (end, _) = object::<ESCAPED>(json, 0, &mut fields, None)?;
    (skip_ws::<ESCAPED>(json.as_bytes(), end) == json.len()).then_some(fields)
}

/// Reads the object starting at `json[at..]` (after white space) into `fields`, and returns
/// where it ends (after its `}`); what follows is the caller's to judge. Given `message`, a
/// `message` that is an object (Lambda's JSON log format) is read into it as well, rather than
/// only checked and read again later; the flag says whether it was. The fields are written in
/// place: they are large, and moving them around costs more than reading them.
pub(crate) fn object<'a, const ESCAPED: bool>(
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
pub(crate) fn skip_ws<const ESCAPED: bool>(b: &[u8], mut at: usize) -> usize {
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
