//! Firehose's buffering in front of the transformer, as deployed: where one invocation's records end.
//! Local runs (`meter realtime`, `meter demo`) cut their input the same way, so that what they count
//! (invocations, writes) is what the deployed design would do.

use chrono::{DateTime, Duration, Utc};

/// When Firehose hands its buffer to the transformer: at `max_bytes` of records or `max_age` after the
/// buffer's first record, whichever comes first (the processor's `BufferSizeInMBs` and
/// `BufferIntervalInSeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// Bytes of (compressed) records.
    pub max_bytes: u64,
    /// Age of the buffer's first record.
    pub max_age: Duration,
}

impl Buffering {
    /// The deployed values: Firehose's largest processor buffer, 3 MB, so that each invocation
    /// writes each key's day once for as much traffic as it can (at 1,150 req/s a buffer fills in
    /// about 30 s); and 45 s, so that usage is visible within 60 s (a log stream's delivery every
    /// 2 s, CloudWatch's hand-over to Firehose, this interval, the invocation). A full buffer's archive
    /// rows inflate the records about three times, past Lambda's 6 MB response: the transformer writes
    /// what does not fit to the archive itself (see `transform::RESPONSE_BUDGET_BYTES`).
    pub const DEPLOYED: Self = Self { max_bytes: 3 << 20, max_age: Duration::seconds(45) };
}

impl Default for Buffering {
    fn default() -> Self {
        Self::DEPLOYED
    }
}

/// Cuts a sequence of arriving records into invocations.
#[derive(Debug, Clone)]
pub struct BufferCutter {
    policy: Buffering,
    opened_at: Option<DateTime<Utc>>,
    bytes: u64,
}

impl BufferCutter {
    /// A cutter with an empty buffer.
    #[must_use]
    pub fn new(policy: Buffering) -> Self {
        Self { policy, opened_at: None, bytes: 0 }
    }

    /// Takes a record of `bytes` arriving at `at`. Returns true when the buffer held so far must be
    /// handed over first: the record would overfill it, or the buffer's interval had run out before
    /// the record arrived. The record then opens the next buffer.
    pub fn arrives(&mut self, at: DateTime<Utc>, bytes: u64) -> bool {
        let cut = match self.opened_at {
            None => false,
            Some(opened) => at >= opened + self.policy.max_age || self.bytes + bytes > self.policy.max_bytes,
        };
        if cut || self.opened_at.is_none() {
            self.opened_at = Some(at);
            self.bytes = 0;
        }
        self.bytes += bytes;
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_ends_at_its_interval_or_its_size() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let at = |s: i64| start + Duration::seconds(s);
        let mut cutter = BufferCutter::new(Buffering { max_bytes: 100, max_age: Duration::seconds(30) });
        assert!(!cutter.arrives(at(0), 40));
        assert!(!cutter.arrives(at(10), 40));
        assert!(cutter.arrives(at(20), 40), "120 bytes would overfill 100");
        assert!(!cutter.arrives(at(49), 10), "the new buffer opened at 20");
        assert!(cutter.arrives(at(50), 10), "interval over");
        assert!(!cutter.arrives(at(51), 90), "exactly full is not over");
        assert!(cutter.arrives(at(51), 1));
    }
}
