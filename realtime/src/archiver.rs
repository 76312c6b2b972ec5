//! What Firehose and its Parquet conversion do, done locally (`meter archive`): usage events of many
//! deliveries into day-partitioned Parquet files, rejects beside them. Unlike Firehose, which partitions
//! whole records, every event lands in its own UTC day's folder.

use std::collections::BTreeMap;

use meter_model::{ArchiveWriter, BatchId, Day, StoreError, UsageEvent};
use sha2::{Digest, Sha256};

use crate::decode;
use crate::lines::{self, Classified, LineStats};
use crate::local::{ReadRecord, data_message};

/// Rows buffered per day before a file is written; bounds memory for any input size.
pub const DEFAULT_ROWS_PER_FILE: usize = 250_000;

/// What an archive run did.
#[derive(Debug, Clone, Default)]
pub struct ArchiveSummary {
    /// Deliveries read.
    pub deliveries: u64,
    /// Control messages among them.
    pub control_messages: u64,
    /// Deliveries that could not be decoded, with why (nothing of them was archived).
    pub undecodable: Vec<String>,
    /// What the lines were.
    pub lines: LineStats,
    /// Events written per day.
    pub events_per_day: BTreeMap<Day, u64>,
    /// Files written (events and rejects).
    pub files: Vec<String>,
    /// Rejected lines kept.
    pub rejects_kept: u64,
}

struct DayBuffer {
    events: Vec<UsageEvent<'static>>,
    sources: Sha256,
}

/// An archive run over many deliveries.
pub struct Archiver<A> {
    archive: A,
    rows_per_file: usize,
    buffers: BTreeMap<Day, DayBuffer>,
    summary: ArchiveSummary,
}

impl<A: ArchiveWriter> Archiver<A> {
    /// A run writing to `archive`, a file per day every `rows_per_file` rows.
    pub fn new(archive: A, rows_per_file: usize) -> Self {
        Self {
            archive,
            rows_per_file: rows_per_file.max(1),
            buffers: BTreeMap::new(),
            summary: ArchiveSummary::default(),
        }
    }

    /// Adds one Lambda subscription event. An undecodable one is recorded in the summary, not fatal.
    pub async fn add_event(&mut self, event_json: &[u8], origin: &str) -> Result<(), StoreError> {
        self.summary.deliveries += 1;
        match decode::subscription_data(event_json) {
            Ok(compressed) => self.ingest(&compressed, origin).await,
            Err(err) => {
                self.undecodable(origin, &err);
                Ok(())
            }
        }
    }

    /// Adds one gzip CloudWatch Logs payload.
    pub async fn add_compressed(&mut self, compressed: &[u8], origin: &str) -> Result<(), StoreError> {
        self.summary.deliveries += 1;
        self.ingest(compressed, origin).await
    }

    async fn ingest(&mut self, compressed: &[u8], origin: &str) -> Result<(), StoreError> {
        let read = data_message(compressed, |payload| (lines::batch_id(payload), lines::classify(payload)));
        self.take(read, origin).await
    }

    /// Adds one delivery [read](ReadRecord::read) already (the counters read the same one).
    pub async fn add_read(&mut self, record: ReadRecord, origin: &str) -> Result<(), StoreError> {
        self.summary.deliveries += 1;
        let read = record.content.map(|content| content.map(|c| (c.batch, c.classified)));
        self.take(read, origin).await
    }

    /// A delivery as read: archived, counted as a control message, or recorded as undecodable.
    async fn take(
        &mut self,
        read: Result<Option<(BatchId, Classified)>, String>,
        origin: &str,
    ) -> Result<(), StoreError> {
        match read {
            Ok(Some((batch, classified))) => self.archive(batch, classified).await,
            Ok(None) => {
                self.summary.control_messages += 1;
                Ok(())
            }
            Err(err) => {
                self.undecodable(origin, &err);
                Ok(())
            }
        }
    }

    /// Keeps a delivery's rejects and buffers its events per day.
    async fn archive(&mut self, batch: BatchId, classified: Classified) -> Result<(), StoreError> {
        self.summary.lines.add(classified.stats);
        let mut rejects_by_day: BTreeMap<Day, Vec<_>> = BTreeMap::new();
        for reject in classified.rejects {
            rejects_by_day.entry(Day::of(reject.log_timestamp)).or_default().push(reject);
        }
        for (day, rejects) in rejects_by_day {
            self.summary.rejects_kept += rejects.len() as u64;
            let location = self.archive.write_rejects(day, batch.as_str(), &rejects).await?;
            self.summary.files.push(location);
        }
        let mut touched = Vec::new();
        for event in classified.events {
            let day = Day::of(event.timestamp);
            let buffer = self
                .buffers
                .entry(day)
                .or_insert_with(|| DayBuffer { events: Vec::new(), sources: Sha256::new() });
            if buffer.events.is_empty() || touched.last() != Some(&day) {
                buffer.sources.update(batch.as_str().as_bytes());
            }
            buffer.events.push(event);
            if touched.last() != Some(&day) {
                touched.push(day);
            }
        }
        for day in touched {
            if self.buffers.get(&day).is_some_and(|b| b.events.len() >= self.rows_per_file) {
                self.flush(day).await?;
            }
        }
        Ok(())
    }

    fn undecodable(&mut self, origin: &str, err: &dyn std::fmt::Display) {
        self.summary.undecodable.push(format!("{origin}: {err}"));
    }

    async fn flush(&mut self, day: Day) -> Result<(), StoreError> {
        let Some(buffer) = self.buffers.remove(&day) else { return Ok(()) };
        // Named after the deliveries it holds: archiving the same input again rewrites the same file.
        let mut sources = buffer.sources;
        sources.update(day.to_string().as_bytes());
        let name = format!("part-{}", &hex::encode(sources.finalize())[..20]);
        let location = self.archive.write_events(day, &name, &buffer.events).await?;
        *self.summary.events_per_day.entry(day).or_insert(0) += buffer.events.len() as u64;
        self.summary.files.push(location);
        Ok(())
    }

    /// Writes the buffered events of every day before `day`: a caller that feeds deliveries in time
    /// order keeps memory to about a day of events. Events that arrive later for those days go to
    /// files of their own.
    pub async fn flush_before(&mut self, day: Day) -> Result<(), StoreError> {
        let days: Vec<Day> = self.buffers.range(..day).map(|(d, _)| *d).collect();
        for day in days {
            self.flush(day).await?;
        }
        Ok(())
    }

    /// What has been done so far.
    #[must_use]
    pub fn summary(&self) -> &ArchiveSummary {
        &self.summary
    }

    /// Writes what is buffered and returns the summary.
    pub async fn finish(mut self) -> Result<ArchiveSummary, StoreError> {
        self.flush_all().await?;
        Ok(self.summary)
    }

    /// Writes every buffered day's events now; the run goes on (a caller that settles what it has
    /// archived at its own moments, as `meter serve` does at each Firehose-like buffer).
    pub async fn flush_all(&mut self) -> Result<(), StoreError> {
        let days: Vec<Day> = self.buffers.keys().copied().collect();
        for day in days {
            self.flush(day).await?;
        }
        Ok(())
    }
}
