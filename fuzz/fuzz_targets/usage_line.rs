//! The usage-line parsers on arbitrary text: they must never panic, what they accept must satisfy the
//! contract, and the reader of escaped lines must agree with the general parser whenever it answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_model::{KeyId, LineOutcome};
use meter_realtime::usage_line::{parse_escaped_line, parse_line};

fuzz_target!(|text: &str| {
    if let LineOutcome::Usage(event) = parse_line(text, None) {
        assert!((100..=599).contains(&event.status_code));
        assert!(KeyId::is_valid(&event.key_id));
        assert!(!event.request_id.is_empty());
        assert!(event.latency_ms.is_none_or(|ms| i32::try_from(ms).is_ok()));
    }
    // Taken as the inside of a JSON string literal, as CloudWatch Logs payloads hold lines.
    if let Ok(line) = serde_json::from_str::<String>(&format!("\"{text}\""))
        && let Some(answer) = parse_escaped_line(text, None)
    {
        assert_eq!(answer, parse_line(&line, None), "escaped {text:?}");
    }
});
