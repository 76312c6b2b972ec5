use std::borrow::Cow;

use super::gzip::{gunzip_streaming, whole};
use super::*;
use meter_model::LineOutcome;
use meter_sim::cloudwatch::gzip;
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
    let usage = r#"{"type":"API_USAGE","requestId":"r-1","keyId":"k1","statusCode":200,"shouldCount":true}"#;
    let message = prop_oneof![
        "[ -~]{0,20}",
        "\\PC{0,10}",
        Just("{\"type\":\"API_USAGE\",\"a\":\"\\b\"}".to_owned()),
        // Usage lines in the three shapes, whole or with a character of JSON or escape put in.
        (0usize..3, 0usize..120, "[ \t\n\\\\\"{}:,a-z0-9\u{1}]{0,2}").prop_map(move |(shape, cut, junk)| {
            let line = match shape {
                0 => usage.to_owned(),
                1 => format!("2026-11-30T14:03:07.125Z\tabc\tINFO\t{usage}\n"),
                _ => format!(r#"{{"level":"INFO","message":{usage}}}"#),
            };
            let cut = (cut * line.len() / 100).min(line.len());
            format!("{}{junk}{}", &line[..cut], &line[cut..])
        }),
    ];
    let event = (any::<bool>(), 0u64..u64::MAX, prop_oneof![any::<i64>(), 0i64..4_000_000_000_000], message)
        .prop_map(|(numeric, id, ts, m)| {
            let id = if numeric { serde_json::json!(id) } else { serde_json::json!(format!("{id:056}")) };
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
        prop_assert_eq!(crate::usage_line::next_special(&bytes, from), expected);
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
                        prop_assert_eq!(known, &crate::usage_line::parse_line(event.message(&mut scratch), at));
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
    let usage = r#"{"type":"API_USAGE","requestId":"r-1","keyId":"k1","statusCode":200,"shouldCount":true}"#;
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
            match gunzip_streaming(&gz) {
                Ok(streamed) => prop_assert_eq!(whole, streamed),
                // libdeflate accepts some Huffman headers zlib refuses (an incomplete code); what it
                // returns has passed the member's CRC-32 and size, so it is the original bytes.
                Err(_) => prop_assert_eq!(whole, data),
            }
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
