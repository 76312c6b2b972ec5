//! The payload decoder on arbitrary bytes, taken both as gzip and as already inflated JSON: it must
//! never panic, never inflate past its cap, and agree with the general reader on the payload and on
//! what its lines count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meter_realtime::decode::{self, LogsPayload};
use meter_realtime::lines;

fn summary(p: &LogsPayload<'_>) -> (String, String, Vec<(String, i64, String)>) {
    let mut scratch = String::new();
    let events = p
        .log_events
        .iter()
        .map(|e| (e.id.to_string(), e.timestamp, e.message(&mut scratch).to_owned()))
        .collect();
    (p.log_group.to_string(), p.log_stream.to_string(), events)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(inflated) = decode::gunzip(data) {
        assert!(inflated.len() <= decode::MAX_INFLATED_BYTES);
        if let Ok(payload) = decode::parse_payload(&inflated) {
            let _ = lines::aggregate(&payload);
        }
    }
    if let Ok(payload) = decode::parse_payload(data) {
        let general = decode::parse_payload_general(data)
            .expect("the fast reader accepted what the general one refuses");
        assert_eq!(summary(&payload), summary(&general));
        assert_eq!(payload.message_type, general.message_type);
        // Lines the fast reader read while finding their ends count exactly as the general reader's.
        let aggregated = lines::aggregate(&payload);
        let general_aggregate = lines::aggregate(&general);
        assert_eq!(aggregated.delta, general_aggregate.delta);
        assert_eq!(aggregated.stats, general_aggregate.stats);
        assert_eq!(aggregated.rejected_by_reason, general_aggregate.rejected_by_reason);
        let classified = lines::classify(&payload);
        assert_eq!(aggregated.stats.log_events, classified.stats.log_events);
        assert_eq!(aggregated.stats.usage_events, classified.stats.usage_events);
    }
});
