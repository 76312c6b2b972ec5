//! The payload decoder on arbitrary bytes, taken both as gzip and as already inflated JSON: it must
//! never panic, never inflate past its cap, and aggregate whatever it decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_realtime::{decode, lines};

fuzz_target!(|data: &[u8]| {
    if let Ok(inflated) = decode::gunzip(data) {
        assert!(inflated.len() <= decode::MAX_INFLATED_BYTES);
        if let Ok(payload) = decode::parse_payload(&inflated) {
            let _ = lines::aggregate(&payload);
        }
    }
    if let Ok(payload) = decode::parse_payload(data) {
        let aggregated = lines::aggregate(&payload);
        let classified = lines::classify(&payload);
        assert_eq!(aggregated.stats.log_events, classified.stats.log_events);
        assert_eq!(aggregated.stats.usage_events, classified.stats.usage_events);
    }
});
