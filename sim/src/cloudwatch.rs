//! What CloudWatch Logs does to a subscription payload before it reaches a Lambda: gzip, then base64
//! inside `{"awslogs":{"data":…}}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The Lambda event a CloudWatch Logs subscription delivers for `payload_json`.
#[must_use]
pub fn encode_subscription_event(payload_json: &[u8]) -> String {
    subscription_event_of(&gzip(payload_json))
}

/// The Lambda event for an already gzipped payload.
#[must_use]
pub fn subscription_event_of(compressed: &[u8]) -> String {
    serde_json::json!({ "awslogs": { "data": STANDARD.encode(compressed) } }).to_string()
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
