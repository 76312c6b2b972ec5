//! What CloudWatch Logs and Firehose do with the log group: every few seconds each stream's new events
//! become one subscription payload (gzip, CloudWatch's JSON); the payloads go to the realtime path
//! (buffered as deployed, 3 MB or 45 s) and to the archive. A stream's offset is settled only once the
//! buffer holding its events is applied and archived, so a restart redelivers exactly what was not:
//! the realtime path recognises a delivery it already counted, and the archive rewrites the same file.

use std::io;

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use meter_archive::Archive;
use meter_model::{Clock, CounterCorrector, StoreError, UsageWriter};
use meter_realtime::archiver::Archiver;
use meter_realtime::buffer::Buffering;
use meter_realtime::local::LocalRealtime;
use meter_store::{AnySink, ArchiveLocation};
use serde::Serialize;

use crate::log_group::{LogEvent, LogGroup};

/// The subscription filter's name in the payloads.
const FILTER: &str = "meter-local-usage";
/// CloudWatch Logs' batch limits, which bound what one delivery carries: 10,000 events, and 1 MiB
/// counting each message and 26 bytes per event.
const MAX_EVENTS_PER_DELIVERY: usize = 10_000;
const MAX_BYTES_PER_DELIVERY: usize = 1 << 20;
const EVENT_OVERHEAD_BYTES: usize = 26;

/// `events` cut into deliveries as CloudWatch Logs cuts a stream's events.
fn deliveries_of(events: &[LogEvent]) -> Vec<&[LogEvent]> {
    let mut cuts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, event) in events.iter().enumerate() {
        let size = event.message.len() + EVENT_OVERHEAD_BYTES;
        if index > start
            && (index - start == MAX_EVENTS_PER_DELIVERY || bytes + size > MAX_BYTES_PER_DELIVERY)
        {
            cuts.push(&events[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        cuts.push(&events[start..]);
    }
    cuts
}

/// A delivery that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The log group's files.
    #[error("the local log group: {0}")]
    Logs(#[from] io::Error),
    /// The archive.
    #[error("the archive: {0}")]
    Archive(#[from] StoreError),
    /// The counters (bringing parked usage into the key totals).
    #[error("the counters: {0}")]
    Counters(StoreError),
    /// Usage alerts claimed in the store could not be written out.
    #[error("writing usage alerts to {path}: {source}")]
    Alerts {
        /// The alerts file.
        path: std::path::PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// CloudWatch Logs' subscription payload, borrowing the events it carries.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    message_type: &'static str,
    owner: &'static str,
    log_group: &'a str,
    log_stream: &'a str,
    subscription_filters: [&'static str; 1],
    log_events: Vec<PayloadEvent<'a>>,
}

#[derive(Serialize)]
struct PayloadEvent<'a> {
    /// CloudWatch's ids are digit strings; the event's offset in its stream, zero-padded.
    id: String,
    timestamp: i64,
    message: &'a str,
}

/// The subscription payload of one stream's events, gzip-compressed as CloudWatch sends it.
pub fn payload(group: &str, stream: &str, events: &[LogEvent]) -> io::Result<Vec<u8>> {
    let body = Payload {
        message_type: "DATA_MESSAGE",
        owner: "local",
        log_group: group,
        log_stream: stream,
        subscription_filters: [FILTER],
        log_events: events
            .iter()
            .map(|event| PayloadEvent {
                id: format!("{:020}", event.offset),
                timestamp: event.timestamp_ms,
                message: &event.message,
            })
            .collect(),
    };
    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    serde_json::to_writer(&mut gzip, &body)?;
    gzip.finish()
}

/// The delivery loop's state: the realtime path, the archive, and where each stream stands.
pub struct Deliveries<S, C> {
    group: std::sync::Arc<LogGroup>,
    realtime: LocalRealtime<S, C>,
    /// One for the run: opening an S3 archive loads the AWS configuration and builds a client.
    archiver: Archiver<Archive<AnySink>>,
    buffering: Buffering,
    /// Per stream: read up to here (handed on, maybe not yet settled).
    read: Vec<u64>,
    /// Per stream: settled up to here.
    settled: Vec<u64>,
    opened: Option<DateTime<Utc>>,
    buffered_bytes: u64,
    /// When the parked usage was last brought into the key totals.
    parked_refreshed: Option<DateTime<Utc>>,
    /// Where usage alerts go, and how many of the run's are there.
    alerts_file: Option<std::path::PathBuf>,
    alerts_written: usize,
    /// Events delivered since start.
    pub events: u64,
}

/// How often `meter serve` brings parked usage into the key totals (the stack does it every
/// 10 minutes; locally it costs next to nothing, so every minute).
pub const PARKED_REFRESH_INTERVAL: chrono::Duration = chrono::Duration::minutes(1);

impl<S: UsageWriter, C: Clock> Deliveries<S, C> {
    /// Resumes each stream of `group` from its settled offset.
    pub async fn resume(
        group: std::sync::Arc<LogGroup>,
        realtime: LocalRealtime<S, C>,
        archive: ArchiveLocation,
        buffering: Buffering,
    ) -> io::Result<Self> {
        let settled =
            (0..group.streams()).map(|index| group.settled(index)).collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            group,
            realtime,
            archiver: Archiver::new(Archive::new(AnySink::open(&archive).await), usize::MAX),
            buffering,
            read: settled.clone(),
            settled,
            opened: None,
            buffered_bytes: 0,
            parked_refreshed: None,
            alerts_file: None,
            alerts_written: 0,
            events: 0,
        })
    }

    /// Writes the usage alerts the counters claim to `path`, one EventBridge-shaped event a line.
    #[must_use]
    pub fn with_alerts_file(mut self, path: std::path::PathBuf) -> Self {
        self.alerts_file = Some(path);
        self
    }

    /// Appends the alerts claimed since the last call, and says so.
    fn write_alerts(&mut self) -> Result<(), DeliveryError> {
        let alerts = &self.realtime.totals().counters.apply.alerts;
        let (Some(path), true) = (&self.alerts_file, alerts.len() > self.alerts_written) else {
            return Ok(());
        };
        let failed = |source| DeliveryError::Alerts { path: path.clone(), source };
        let mut lines = String::new();
        for alert in &alerts[self.alerts_written..] {
            meter_realtime::alerts::log(alert);
            lines.push_str(&alert.event().to_string());
            lines.push('\n');
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(failed)?;
        std::io::Write::write_all(&mut file, lines.as_bytes()).map_err(failed)?;
        self.alerts_written = alerts.len();
        Ok(())
    }

    /// One tick at `now`: each stream's new events delivered; the buffer settled if it is due.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), DeliveryError> {
        self.group.write_pending()?;
        for index in 0..self.group.streams() {
            let (events, end) = self.group.read_from(index, self.read[index])?;
            if events.is_empty() {
                continue;
            }
            let stream = self.group.stream_name(index);
            for delivery in deliveries_of(&events) {
                let compressed = payload(self.group.name(), &stream, delivery)?;
                let origin = format!("{}/{stream}@{}", self.group.name(), delivery[0].offset);
                self.archiver.add_compressed(&compressed, &origin).await?;
                let undecodable = self.realtime.totals().undecodable.len();
                self.realtime.add_record(&compressed, Some(now), &origin).await;
                if self.realtime.totals().undecodable.len() > undecodable {
                    // Payloads made here within CloudWatch's limits always decode: a bug, and an
                    // operator must know its events are not counted.
                    tracing::error!(%origin, "a local delivery could not be decoded; its events are not counted");
                }
                self.buffered_bytes += compressed.len() as u64;
            }
            self.opened.get_or_insert(now);
            self.events += events.len() as u64;
            self.read[index] = end;
        }
        let due = self.opened.is_some_and(|opened| now >= opened + self.buffering.max_age)
            || self.buffered_bytes >= self.buffering.max_bytes;
        if due { self.settle().await } else { Ok(()) }
    }

    /// Applies and archives what is buffered, then settles the streams' offsets.
    pub async fn settle(&mut self) -> Result<(), DeliveryError> {
        self.realtime.invoke().await;
        self.write_alerts()?;
        self.archiver.flush_all().await?;
        for index in 0..self.read.len() {
            if self.read[index] != self.settled[index] {
                self.group.settle(index, self.read[index])?;
                self.settled[index] = self.read[index];
            }
        }
        self.opened = None;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Delivers and settles everything written so far (a graceful shutdown).
    pub async fn drain(&mut self, now: DateTime<Utc>) -> Result<(), DeliveryError> {
        self.tick(now).await?;
        self.settle().await
    }

    /// The realtime path's totals so far.
    pub fn realtime(&self) -> &LocalRealtime<S, C> {
        &self.realtime
    }
}

impl<S: UsageWriter + CounterCorrector, C: Clock> Deliveries<S, C> {
    /// Brings the parked usage into the key totals when [`PARKED_REFRESH_INTERVAL`] has passed since
    /// the last time (or `force`).
    pub async fn refresh_parked(&mut self, now: DateTime<Utc>, force: bool) -> Result<(), DeliveryError> {
        if !force && self.parked_refreshed.is_some_and(|at| now < at + PARKED_REFRESH_INTERVAL) {
            return Ok(());
        }
        self.realtime.counters().store().refresh_parked_totals().await.map_err(DeliveryError::Counters)?;
        self.parked_refreshed = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64, size: usize) -> LogEvent {
        LogEvent { timestamp_ms: 0, offset, message: "x".repeat(size) }
    }

    #[test]
    fn deliveries_keep_to_cloudwatchs_batch_limits() {
        let many: Vec<_> = (0..25_000).map(|n| event(n, 10)).collect();
        let sizes: Vec<_> = deliveries_of(&many).iter().map(|d| d.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        let big: Vec<_> = (0..5).map(|n| event(n, 400_000)).collect();
        let sizes: Vec<_> = deliveries_of(&big).iter().map(|d| d.len()).collect();
        assert_eq!(sizes, [2, 2, 1], "at most 1 MiB of messages each");
        assert!(deliveries_of(&[]).is_empty());
    }
}
