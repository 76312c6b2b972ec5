use super::*;
use meter_model::time::parse_instant;
use meter_model::{DroppedFields, Tally, UsageEvent};

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
        dropped: DroppedFields::NONE,
    }
}

/// A line as a CloudWatch payload holds it: the inside of a JSON string literal.
fn escape(line: &str) -> String {
    let literal = serde_json::to_string(line).unwrap();
    literal[1..literal.len() - 1].to_owned()
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
    let ms = r#"{"type":"API_USAGE","requestId":"r","keyId":"k","statusCode":200,"timestamp":1795960987123}"#;
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
    ] {
        let line = format!("{{{base},{extra}}}");
        assert!(matches!(rejected(&line), RejectReason::Invalid { field: f, .. } if f == field), "{line}");
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
fn a_bad_optional_field_is_dropped_and_the_call_still_counts() {
    let long_method = format!(r#""method":"{}""#, "M".repeat(33));
    for (extra, field) in [
        (r#""latencyMs":12.5"#, DroppedFields::LATENCY_MS),
        (r#""latencyMs":-5"#, DroppedFields::LATENCY_MS),
        (r#""latencyMs":3000000000"#, DroppedFields::LATENCY_MS),
        (r#""latencyMs":"fast""#, DroppedFields::LATENCY_MS),
        (r#""method":7"#, DroppedFields::METHOD),
        (long_method.as_str(), DroppedFields::METHOD),
        (r#""resource":"/a\tb""#, DroppedFields::RESOURCE),
    ] {
        let line = format!(
            r#"{{"type":"API_USAGE","requestId":"r1","keyId":"k1","statusCode":200,"shouldCount":true,{extra},"timestamp":"2026-11-29T14:03:07.123Z"}}"#
        );
        let outcome = parse_line(&line, log_time());
        // The escaped reader may decline (then the line is unescaped and read as above); when it
        // answers, it answers the same.
        if let Some(escaped) = parse_escaped_line(&escape(&line), log_time()) {
            assert_eq!(escaped, outcome, "{line}");
        }
        {
            let LineOutcome::Usage(event) = outcome else { panic!("{line}: {outcome:?}") };
            assert_eq!(event.dropped, field, "{line}");
            assert_eq!(event.dropped.names().count(), 1);
            assert_eq!(
                event.tally(),
                Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 },
                "{line}"
            );
            assert!(
                event.method.is_none() && event.resource.is_none() && event.latency_ms.is_none(),
                "{line}"
            );
        }
    }
    assert_eq!(DroppedFields::LATENCY_MS.names().collect::<Vec<_>>(), ["latencyMs"]);
}

#[test]
fn a_timestamp_far_from_its_log_event_is_rejected_as_skew() {
    // The log event was written at 14:03:08: a request lasts at most 15 minutes, clocks disagree by
    // at most 5.
    let line = |ts: &str| {
        format!(r#"{{"type":"API_USAGE","requestId":"r1","keyId":"k1","statusCode":200,"timestamp":"{ts}"}}"#)
    };
    for ts in ["2026-11-29T13:48:08.000Z", "2026-11-29T14:08:08.000Z", "2026-11-29T14:03:08.000Z"] {
        assert!(matches!(parse_line(&line(ts), log_time()), LineOutcome::Usage(_)), "{ts}");
    }
    for ts in [
        "2026-11-29T13:48:07.999Z",
        "2026-11-29T14:08:08.001Z",
        "2026-11-25T14:03:08.000Z",
        "1970-01-01T00:00:00Z",
    ] {
        assert_eq!(rejected(&line(ts)), RejectReason::TimestampSkew, "{ts}");
        assert_eq!(
            parse_escaped_line(&escape(&line(ts)), log_time()),
            Some(LineOutcome::Rejected(RejectReason::TimestampSkew)),
            "{ts}"
        );
    }
    assert_eq!(RejectReason::TimestampSkew.code(), "timestamp_skew");
    // A log event's time at the ends of what chrono can hold (a damaged or hostile record) rejects the
    // line; the window around it is never computed past those ends.
    for logged in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
        let ts = "2026-11-29T14:03:08.000Z";
        assert_eq!(parse_line(&line(ts), Some(logged)), LineOutcome::Rejected(RejectReason::TimestampSkew));
        assert_eq!(
            parse_escaped_line(&escape(&line(ts)), Some(logged)),
            Some(LineOutcome::Rejected(RejectReason::TimestampSkew))
        );
    }
    // Without a log event's time (a line read on its own) there is nothing to compare with.
    assert!(matches!(parse_line(&line("2020-01-01T00:00:00Z"), None), LineOutcome::Usage(_)));
    // A line without a timestamp takes the log event's, which must itself have a four-digit year.
    let bare = r#"{"type":"API_USAGE","requestId":"r1","keyId":"k1","statusCode":200}"#;
    let far = DateTime::from_timestamp_millis(253_402_300_800_000); // year 10000
    assert_eq!(parse_line(bare, far), LineOutcome::Rejected(RejectReason::Missing("timestamp")));
    assert!(matches!(parse_line(bare, log_time()), LineOutcome::Usage(e) if Some(e.timestamp) == log_time()));
}

#[test]
fn a_type_spelled_with_a_json_escape_is_read_by_both_readers() {
    let line =
        r#"{"type":"API_\u0055SAGE","requestId":"r1","keyId":"k1","statusCode":200,"shouldCount":true}"#;
    let read = parse_line(line, log_time());
    assert!(matches!(&read, LineOutcome::Usage(e) if e.request_id == "r1"), "{read:?}");
    // The escaped reader may decline; then the caller unescapes the line and reads it as above.
    if let Some(escaped) = parse_escaped_line(&escape(line), log_time()) {
        assert_eq!(escaped, read);
    }
    // In a payload, where the envelope reads lines as it finds them.
    let payload = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","subscriptionFilters":[],"logEvents":[{{"id":"1","timestamp":{},"message":{}}}]}}"#,
        log_time().unwrap().timestamp_millis(),
        serde_json::to_string(line).unwrap()
    );
    let payload = crate::decode::parse_payload(payload.as_bytes()).unwrap();
    let classified = crate::lines::classify(&payload);
    assert_eq!((classified.events.len(), classified.stats.skipped), (1, 0));
}

#[test]
fn a_line_without_any_timestamp_is_rejected() {
    let line = r#"{"type":"API_USAGE","requestId":"r1","keyId":"k1","statusCode":200}"#;
    assert_eq!(parse_line(line, None), LineOutcome::Rejected(RejectReason::Missing("timestamp")));
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
                    dropped: DroppedFields::NONE,
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
        meter_model::time::format_instant(event.timestamp).into()
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
    serde_json::from_str::<SerdeFields<'_>>(json).ok().map(|f| as_vec(&UsageFields::from(f)))
}

fn as_vec(f: &UsageFields<'_>) -> Vec<Option<String>> {
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
