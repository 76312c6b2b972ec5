//! A reader of payloads in the compact shape CloudWatch Logs writes, which finds each message's end
//! in one scan of its escaped text. It declines (`None`) anything it is not sure of: other white
//! space, unknown or repeated fields, escapes outside messages. Whenever it answers, the answer is
//! the general reader's (checked by a property test).

use std::borrow::Cow;

use meter_model::LineOutcome;

use super::payload::{LogEvent, LogsPayload, MessageType};

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
        self.at = crate::usage_line::next_special(self.text.as_bytes(), self.at);
        self.eat(b'"')?;
        Some(&self.text[start..self.at - 1])
    }

    /// A string with any valid escapes; the whole literal, quotes included.
    fn string_literal(&mut self) -> Option<&'a str> {
        let start = self.at;
        self.eat(b'"')?;
        let b = self.text.as_bytes();
        loop {
            self.at = crate::usage_line::next_special(b, self.at);
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
    fn sequence(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
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
                        // only scanned to their end. Validating a usage line needs the log time
                        // (it stands in for a missing timestamp and bounds the line's own): it
                        // comes first in what CloudWatch Logs writes, and should it come later,
                        // the line is read again once it is known.
                        let start = c.at;
                        let at = timestamp.and_then(chrono::DateTime::from_timestamp_millis);
                        let read_ahead = (c.peek()? == b'"')
                            .then(|| crate::usage_line::parse_escaped_message(c.text, start + 1, at))
                            .flatten();
                        let known = |line: &LineOutcome<'_>| match line {
                            LineOutcome::Usage(_) => at.is_some(),
                            LineOutcome::Skipped => true,
                            LineOutcome::Rejected(_) => false,
                        };
                        match read_ahead {
                            Some((line, end))
                                if known(&line) && c.text.as_bytes().get(end) == Some(&b'"') =>
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
        repaired: false,
        message_type: message_type?,
        log_group: Cow::Borrowed(log_group),
        log_stream: Cow::Borrowed(log_stream),
        log_events,
    })
}
