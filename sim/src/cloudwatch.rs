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
    Gzipper::default().gzip(bytes)
}

/// A gzip encoder that keeps its deflate state from one payload to the next: a delivery of a few
/// events is small, and setting up a fresh encoder's tables costs more than compressing it.
pub struct Gzipper {
    deflate: flate2::Compress,
}

impl Default for Gzipper {
    fn default() -> Self {
        Self { deflate: flate2::Compress::new(flate2::Compression::fast(), false) }
    }
}

impl Gzipper {
    /// One gzip member holding `bytes`.
    pub fn gzip(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.deflate.reset();
        // The member header: deflate, no flags, no time, fastest compression, unknown OS.
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.deflate.total_in();
            let status =
                self.deflate.compress_vec(&bytes[consumed..], &mut out, flate2::FlushCompress::Finish);
            consumed += usize::try_from(self.deflate.total_in() - before).unwrap_or(0);
            match status {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => {}
                // Compressing into a Vec cannot fail; an empty member is still a member.
                Err(_) => break,
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(bytes);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&u32::try_from(bytes.len() % (1 << 32)).unwrap_or(0).to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_reused_encoder_makes_members_any_gzip_reader_reads() {
        let mut gzipper = Gzipper::default();
        for text in ["", "a", &"the same line again\n".repeat(5_000), "after a big one"] {
            let member = gzipper.gzip(text.as_bytes());
            let mut read = String::new();
            flate2::read::GzDecoder::new(member.as_slice()).read_to_string(&mut read).unwrap();
            assert_eq!(read, text);
        }
    }
}
