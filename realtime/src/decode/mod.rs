//! Decoding CloudWatch Logs subscription payloads: base64, gzip (capped before and while inflating,
//! so a hostile or broken payload cannot exhaust memory) and the payload's JSON. Each step is a module
//! of its own: [`gzip`] inflates with caps, [`payload`] holds the decoded payload and its general
//! reader, `envelope` is the fast reader of the compact shape CloudWatch writes, and `unescape` turns
//! a message back into text when a stage needs it.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// Largest compressed payload accepted. Lambda's asynchronous invocations (how CloudWatch Logs calls
/// the processor) carry at most 1 MiB, and Firehose records at most 1,000 KiB.
pub const MAX_COMPRESSED_BYTES: usize = 1 << 20;
/// Largest inflated payload accepted: CloudWatch Logs batches hold at most 1 MiB of log events, so
/// with JSON framing a real payload stays far below this.
pub const MAX_INFLATED_BYTES: usize = 16 << 20;

/// A payload that cannot be decoded. Retrying cannot help; the archive path keeps such data in
/// Firehose's error output.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The Lambda event is not `{"awslogs":{"data":"…"}}`.
    #[error("not a CloudWatch Logs subscription event (expected {{\"awslogs\":{{\"data\":…}}}}): {0}")]
    NotSubscriptionEvent(serde_json::Error),
    /// The data is not base64.
    #[error("the payload is not valid base64")]
    Base64,
    /// The compressed payload is over the cap.
    #[error("the compressed payload has {size} bytes, over the cap of {MAX_COMPRESSED_BYTES}")]
    CompressedTooLarge {
        /// Its size.
        size: usize,
    },
    /// The payload inflates past the cap.
    #[error("the payload inflates past the cap of {MAX_INFLATED_BYTES} bytes")]
    InflatedTooLarge,
    /// The payload is not (complete) gzip.
    #[error("the payload is not valid gzip: {0}")]
    Gzip(std::io::Error),
    /// The inflated payload is not CloudWatch Logs JSON.
    #[error("the payload is not CloudWatch Logs JSON: {0}")]
    Json(serde_json::Error),
}

mod envelope;
pub mod gzip;
pub mod payload;
mod unescape;

pub use gzip::gunzip;
pub use payload::{LogEvent, LogsPayload, MessageType, parse_payload_general};

/// Takes the gzip bytes out of a Lambda subscription event, `{"awslogs":{"data":"<base64>"}}`.
pub fn subscription_data(event_json: &[u8]) -> Result<Vec<u8>, DecodeError> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        awslogs: AwsLogs<'a>,
    }
    #[derive(Deserialize)]
    struct AwsLogs<'a> {
        data: &'a str,
    }
    let event: Event<'_> = serde_json::from_slice(event_json).map_err(DecodeError::NotSubscriptionEvent)?;
    decode_base64(event.awslogs.data)
}

/// Decodes base64, refusing before decoding anything that would exceed the compressed cap.
pub fn decode_base64(data: &str) -> Result<Vec<u8>, DecodeError> {
    let size = base64::decoded_len_estimate(data.len());
    if size > MAX_COMPRESSED_BYTES + 2 {
        return Err(DecodeError::CompressedTooLarge { size });
    }
    STANDARD.decode(data.trim()).map_err(|_| DecodeError::Base64)
}

/// Parses an inflated payload: the fast envelope reader for the compact shape CloudWatch writes, the
/// general reader for anything it declines.
pub fn parse_payload(json: &[u8]) -> Result<LogsPayload<'_>, DecodeError> {
    if let Some(payload) = std::str::from_utf8(json).ok().and_then(envelope::read) {
        return Ok(payload);
    }
    parse_payload_general(json)
}

/// [`parse_payload`], and when the payload cannot be read as it is because of bytes that are not
/// UTF-8 or raw control characters (a corrupt or hand-made payload; CloudWatch writes neither), the
/// payload with each of those replaced by U+FFFD, held in `repaired`. The good events of such a
/// payload are kept; a usage line that held a bad byte is rejected by the line reader's caller.
pub fn parse_payload_repairing<'a>(
    inflated: &'a [u8],
    repaired: &'a mut Option<Vec<u8>>,
) -> Result<LogsPayload<'a>, DecodeError> {
    let err = match parse_payload(inflated) {
        Ok(payload) => return Ok(payload),
        Err(err) => err,
    };
    let Some(fixed) = repair(inflated) else { return Err(err) };
    let fixed: &'a [u8] = repaired.insert(fixed);
    let mut payload = parse_payload(fixed)?;
    payload.repaired = true;
    Ok(payload)
}

/// The payload with invalid UTF-8 and raw control characters other than JSON's white space replaced
/// by U+FFFD; `None` when it holds neither.
fn repair(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let forbidden = |c: char| c < ' ' && !matches!(c, '\t' | '\n' | '\r');
    if matches!(text, Cow::Borrowed(_)) && !text.contains(forbidden) {
        return None;
    }
    Some(text.replace(forbidden, "\u{fffd}").into_bytes())
}

#[cfg(test)]
mod tests;
