//! The usage-line parser on arbitrary text: it must never panic, and whatever it accepts must satisfy
//! the contract it promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_model::{KeyId, LineOutcome, parse_line};

fuzz_target!(|text: &str| {
    if let LineOutcome::Usage(event) = parse_line(text, None) {
        assert!((100..=599).contains(&event.status_code));
        assert!(KeyId::is_valid(&event.key_id));
        assert!(!event.request_id.is_empty());
        assert!(event.latency_ms.is_none_or(|ms| i32::try_from(ms).is_ok()));
    }
});
