//! From a decoded payload to what each stage needs: the realtime aggregate per key and UTC day, or the
//! archive's events and rejects. Both read every line with the one usage-line reader ([`crate::usage_line`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use meter_model::{
    BatchDelta, BatchId, Day, DayDelta, DroppedFields, KeyId, LineOutcome, MarkerSlot, RejectReason,
    RejectedLine, Tally, UsageEvent,
};
use rustc_hash::{FxHashMap, FxHashSet};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::decode::{LogEvent, LogsPayload};
use crate::usage_line::{parse_escaped_line, parse_line};

/// What the lines of a payload were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Log events read.
    pub log_events: u64,
    /// Valid usage events, each request counted once.
    pub usage_events: u64,
    /// Usage events repeating a request already seen in the same payload.
    pub duplicates: u64,
    /// Lines that are not usage lines.
    pub skipped: u64,
    /// Usage lines that break the contract.
    pub rejected: u64,
    /// Usage events whose `method` broke the contract and was dropped (the call counts).
    pub dropped_method: u64,
    /// Usage events whose `resource` was dropped.
    pub dropped_resource: u64,
    /// Usage events whose `latencyMs` was dropped.
    pub dropped_latency_ms: u64,
}

impl LineStats {
    /// Adds another payload's stats.
    pub fn add(&mut self, other: LineStats) {
        self.log_events += other.log_events;
        self.usage_events += other.usage_events;
        self.duplicates += other.duplicates;
        self.skipped += other.skipped;
        self.rejected += other.rejected;
        self.dropped_method += other.dropped_method;
        self.dropped_resource += other.dropped_resource;
        self.dropped_latency_ms += other.dropped_latency_ms;
    }

    fn note_dropped(&mut self, dropped: DroppedFields) {
        if !dropped.is_empty() {
            self.dropped_method += u64::from(dropped.contains(DroppedFields::METHOD));
            self.dropped_resource += u64::from(dropped.contains(DroppedFields::RESOURCE));
            self.dropped_latency_ms += u64::from(dropped.contains(DroppedFields::LATENCY_MS));
        }
    }

    /// Usage events that had an optional field dropped, counting each field.
    #[must_use]
    pub fn dropped_fields(&self) -> u64 {
        self.dropped_method + self.dropped_resource + self.dropped_latency_ms
    }
}

/// The identity of a delivered payload: its log group and stream, and each log event's id, time and
/// message (by a 128-bit XXH3 digest, cheap next to reading the message). A redelivery of the same
/// payload has the same id; two payloads that share event ids but differ in any event (a replay, a
/// hand-made file, an emulator's small integer ids) do not.
#[must_use]
pub fn batch_id(payload: &LogsPayload<'_>) -> BatchId {
    let mut hasher = Sha256::new();
    hasher.update(payload.log_group.as_bytes());
    hasher.update([0]);
    hasher.update(payload.log_stream.as_bytes());
    for event in &payload.log_events {
        hasher.update([0]);
        hasher.update(event.id.as_bytes());
        hasher.update([0]);
        hasher.update(event.timestamp.to_le_bytes());
        hasher.update(xxh3_128(event.escaped().as_bytes()).to_le_bytes());
    }
    BatchId::from_digest(&hasher.finalize())
}

/// Where a payload's marker lives: the minute of its earliest valid log event time and a shard of its
/// log stream. A redelivery has the same events, so the same slot.
#[must_use]
pub fn marker_slot(payload: &LogsPayload<'_>) -> MarkerSlot {
    let first = payload.log_events.iter().filter_map(LogEvent::log_time).min().unwrap_or_default();
    MarkerSlot::of(first, xxh3_64(payload.log_stream.as_bytes()))
}

/// The latest valid log event time of a payload: when CloudWatch can have sent it at the earliest.
#[must_use]
pub fn latest_log_time(payload: &LogsPayload<'_>) -> Option<DateTime<Utc>> {
    payload.log_events.iter().filter_map(LogEvent::log_time).max()
}

/// A delivery's counts per key and day, from its usage events (each request once, as
/// [`classify`] gives them).
#[must_use]
pub fn delta_of(payload: &LogsPayload<'_>, events: &[UsageEvent<'_>]) -> BatchDelta {
    let entries: Vec<DayDelta> = events
        .iter()
        .filter_map(|event| {
            Some(DayDelta {
                key_id: KeyId::parse(&event.key_id).ok()?,
                day: Day::of(event.timestamp),
                tally: event.tally(),
                last_used: event.timestamp,
            })
        })
        .collect();
    BatchDelta::new(batch_id(payload), marker_slot(payload), entries)
}

/// The realtime view of a payload.
#[derive(Debug, Default)]
pub struct Aggregated {
    /// Counts per key and day, ready to apply.
    pub delta: BatchDelta,
    /// What the lines were.
    pub stats: LineStats,
    /// Rejected lines by reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// A line worth a stage's attention, as [`walk`] hands it over.
enum Line<'s> {
    /// A usage event whose request id is new in this payload.
    Usage(&'s UsageEvent<'s>),
    /// A rejected usage line, with the line.
    Rejected(RejectReason, &'s str),
}

/// Reads every line of a payload once: counts what the lines were, passes over other log output and
/// repeated request ids, and hands each new usage event or rejected line to `visit`. Request ids are
/// remembered by a 128-bit hash: no allocation per event, and a collision among the few thousand ids
/// of one payload is far less likely than a hardware fault.
fn walk(payload: &LogsPayload<'_>, mut visit: impl FnMut(&LogEvent<'_>, Line<'_>)) -> LineStats {
    let mut stats = LineStats::default();
    let mut seen: FxHashSet<u128> = FxHashSet::default();
    seen.reserve(payload.log_events.len());
    let mut scratch = String::new();
    for event in &payload.log_events {
        stats.log_events += 1;
        // Most usage lines were read by the payload's reader, or are read here where they stand,
        // still escaped; the rest go through unescaping and the general parser, and so does every
        // rejected line (which is kept as text).
        let read_here;
        let outcome = if let Some(known) = event.known_outcome() {
            known
        } else {
            let at = event.log_time();
            read_here = match parse_escaped_line(event.escaped(), at) {
                Some(outcome @ (LineOutcome::Usage(_) | LineOutcome::Skipped)) => outcome,
                _ => parse_line(event.message(&mut scratch), at),
            };
            &read_here
        };
        // A usage line in a damaged log event is rejected, never billed: a byte that was not text
        // became U+FFFD, and a log time that is not a time cannot bound the line's own.
        let damaged = match outcome {
            LineOutcome::Usage(_) if payload.repaired && event.escaped().contains('\u{fffd}') => {
                Some(RejectReason::InvalidBytes)
            }
            LineOutcome::Usage(_) if event.log_time().is_none() => Some(RejectReason::InvalidLogTimestamp),
            _ => None,
        };
        if let Some(reason) = damaged {
            stats.rejected += 1;
            visit(event, Line::Rejected(reason, event.message(&mut scratch)));
            continue;
        }
        match outcome {
            LineOutcome::Usage(usage) => {
                if seen.insert(xxh3_128(usage.request_id.as_bytes())) {
                    stats.usage_events += 1;
                    stats.note_dropped(usage.dropped);
                    visit(event, Line::Usage(usage));
                } else {
                    stats.duplicates += 1;
                }
            }
            LineOutcome::Skipped => stats.skipped += 1,
            LineOutcome::Rejected(reason) => {
                stats.rejected += 1;
                visit(event, Line::Rejected(*reason, event.message(&mut scratch)));
            }
        }
    }
    stats
}

/// Aggregates a payload per key and UTC day, counting each request id once.
#[must_use]
pub fn aggregate(payload: &LogsPayload<'_>) -> Aggregated {
    let mut rejected_by_reason = BTreeMap::new();
    // Per key, its days (a payload spans one day, two around midnight).
    let mut keys: FxHashMap<String, Vec<(Day, Tally, DateTime<Utc>)>> = FxHashMap::default();
    let stats = walk(payload, |_, line| match line {
        Line::Usage(usage) => {
            let days = match keys.get_mut(usage.key_id.as_ref()) {
                Some(days) => days,
                None => keys.entry(usage.key_id.to_string()).or_default(),
            };
            let day = Day::of(usage.timestamp);
            match days.iter_mut().find(|(d, _, _)| *d == day) {
                Some((_, tally, last_used)) => {
                    tally.add(usage.tally());
                    *last_used = (*last_used).max(usage.timestamp);
                }
                None => days.push((day, usage.tally(), usage.timestamp)),
            }
        }
        Line::Rejected(reason, _) => *rejected_by_reason.entry(reason.code()).or_insert(0) += 1,
    });
    // The parser admits only key ids that are valid item ids, so every key here parses.
    let entries = keys.into_iter().flat_map(|(key, days)| {
        let key_id = KeyId::parse(&key).ok();
        days.into_iter().filter_map(move |(day, tally, last_used)| {
            key_id.clone().map(|key_id| DayDelta { key_id, day, tally, last_used })
        })
    });
    Aggregated {
        delta: BatchDelta::new(batch_id(payload), marker_slot(payload), entries.collect::<Vec<_>>()),
        stats,
        rejected_by_reason,
    }
}

/// The archive's view of a payload.
#[derive(Debug)]
pub struct Classified {
    /// Valid usage events, each request once, in delivery order.
    pub events: Vec<UsageEvent<'static>>,
    /// Rejected lines with their reasons.
    pub rejects: Vec<RejectedLine>,
    /// What the lines were.
    pub stats: LineStats,
}

/// Splits a payload into usage events and rejected lines.
#[must_use]
pub fn classify(payload: &LogsPayload<'_>) -> Classified {
    let mut events = Vec::with_capacity(payload.log_events.len());
    let mut rejects = Vec::new();
    let stats = walk(payload, |event, line| match line {
        Line::Usage(usage) => events.push(usage.clone().into_owned()),
        Line::Rejected(reason, message) => rejects.push(RejectedLine::new(
            reason,
            &payload.log_group,
            &payload.log_stream,
            &event.id,
            event.log_time().unwrap_or_default(),
            message,
        )),
    });
    Classified { events, rejects, stats }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::parse_payload;

    fn payload_json(lines: &[&str]) -> Vec<u8> {
        let events: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, m)| serde_json::json!({"id": format!("{i:056}"), "timestamp": 1_796_083_199_000_i64 + i as i64, "message": m}))
            .collect();
        serde_json::json!({"messageType": "DATA_MESSAGE", "logGroup": "/aws/lambda/api", "logStream": "s1", "logEvents": events})
            .to_string()
            .into_bytes()
    }

    const OK: &str = r#"{"type":"API_USAGE","requestId":"r1","keyId":"aaaaaaaaaaaa","statusCode":200,"shouldCount":true,"timestamp":"2026-11-30T23:59:59.999Z"}"#;
    const NEXT_DAY: &str = r#"{"type":"API_USAGE","requestId":"r2","keyId":"aaaaaaaaaaaa","statusCode":500,"timestamp":"2026-12-01T00:00:00.000Z"}"#;
    const BAD: &str = r#"{"type":"API_USAGE","requestId":"r3","keyId":"aaaaaaaaaaaa","statusCode":"200"}"#;

    #[test]
    fn aggregates_per_key_and_day_counting_each_request_once() {
        let json = payload_json(&[OK, "START RequestId: x", NEXT_DAY, OK, BAD]);
        let payload = parse_payload(&json).unwrap();
        let aggregated = aggregate(&payload);
        assert_eq!(
            aggregated.stats,
            LineStats {
                log_events: 5,
                usage_events: 2,
                duplicates: 1,
                skipped: 1,
                rejected: 1,
                ..LineStats::default()
            }
        );
        assert_eq!(aggregated.rejected_by_reason, BTreeMap::from([("invalid_statusCode".to_owned(), 1)]));
        let days: Vec<_> = aggregated.delta.days().iter().map(|d| (d.day.to_string(), d.tally)).collect();
        assert_eq!(
            days,
            [
                ("2026-11-30".to_owned(), Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 }),
                ("2026-12-01".to_owned(), Tally { successful_calls: 0, failed_calls: 1, usage_count: 1 }),
            ]
        );
    }

    #[test]
    fn classify_keeps_rejects_with_reason_and_origin() {
        let json = payload_json(&[OK, BAD]);
        let payload = parse_payload(&json).unwrap();
        let classified = classify(&payload);
        assert_eq!(classified.events.len(), 1);
        assert_eq!(classified.rejects.len(), 1);
        let reject = &classified.rejects[0];
        assert_eq!(reject.reason, "invalid_statusCode");
        assert_eq!(reject.log_group, "/aws/lambda/api");
        assert_eq!(reject.log_event_id, format!("{:056}", 1));
        assert_eq!(reject.line, BAD);
    }

    #[test]
    fn batch_ids_follow_the_event_ids() {
        let a = payload_json(&[OK, NEXT_DAY]);
        let b = payload_json(&[OK]);
        let id = |json: &[u8]| batch_id(&parse_payload(json).unwrap());
        assert_eq!(id(&a), id(&a.clone()));
        assert_ne!(id(&a), id(&b));
    }

    /// One damaged log event (bytes that are not UTF-8, a raw control character, a timestamp that is
    /// not a time) spoils only itself: the good events of the delivery are kept, the bad ones rejected.
    #[test]
    fn a_damaged_log_event_is_rejected_and_the_rest_of_the_delivery_kept() {
        let literal = |id: &str| serde_json::to_string(&OK.replace("\"r1\"", &format!("\"{id}\""))).unwrap();
        let event = |i: usize, ts: &str, message: Vec<u8>| {
            let mut bytes = format!(r#"{{"id":"{i:056}","timestamp":{ts},"message":"#).into_bytes();
            bytes.extend(message);
            bytes.push(b'}');
            bytes
        };
        // The byte goes inside the request id, between its escaped quotes.
        let with_byte = |id: &str, byte: u8| {
            let mut message = literal(id).into_bytes();
            let quoted = format!("\\\"{id}\\\"");
            let at = message.windows(quoted.len()).position(|w| w == quoted.as_bytes()).unwrap() + 2;
            message.insert(at, byte);
            message
        };
        let events = [
            event(0, "1796083199000", with_byte("a", 0xff)),
            event(1, "1796083199001", with_byte("b", 0x01)),
            event(2, "1796083199002", literal("c").into_bytes()),
            event(3, "1e30", literal("d").into_bytes()),
        ];
        let mut bytes =
            br#"{"messageType":"DATA_MESSAGE","logGroup":"g","logStream":"s","logEvents":["#.to_vec();
        bytes.extend(events.join(&b","[..]));
        bytes.extend(b"]}");
        assert!(parse_payload(&bytes).is_err(), "the payload cannot be read as it is");
        let mut repaired = None;
        let payload = crate::decode::parse_payload_repairing(&bytes, &mut repaired).unwrap();
        let classified = classify(&payload);
        let kept: Vec<&str> = classified.events.iter().map(|e| e.request_id.as_ref()).collect();
        let mut reasons: Vec<&str> = classified.rejects.iter().map(|r| r.reason.as_str()).collect();
        reasons.sort_unstable();
        assert_eq!(kept, ["c"], "{reasons:?}");
        assert_eq!(reasons, ["invalid_bytes", "invalid_bytes", "invalid_log_timestamp"]);
    }

    #[test]
    fn batch_ids_tell_apart_deliveries_that_share_event_ids() {
        let id = |json: &[u8]| batch_id(&parse_payload(json).unwrap());
        let a = payload_json(&[OK, NEXT_DAY]);
        // The same ids and times, another message: another delivery.
        let b = payload_json(&[OK, BAD]);
        assert_ne!(id(&a), id(&b));
        // The same ids and messages, another time: another delivery.
        let later = String::from_utf8(a.clone()).unwrap().replace("1796083199000", "1796083299000");
        assert_ne!(id(&a), id(later.as_bytes()));
    }
}
