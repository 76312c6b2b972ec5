//! Turning the inside of a JSON string literal back into text.

/// Unescapes the inside of a JSON string literal that the JSON parser has already accepted. A lone
/// UTF-16 surrogate, which JSON's grammar lets through, becomes U+FFFD.
pub(super) fn unescape_into(inner: &str, scratch: &mut String) {
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
