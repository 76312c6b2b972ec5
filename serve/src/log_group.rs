//! The local log group: one stream per worker, as a backend's containers would each have. Request
//! handlers append usage lines to their stream in memory; the delivery loop moves them to the stream's
//! file (the log group on disk, under `METER_HOME/logs/`) and reads them from there, so a restart
//! delivers exactly what was written and not yet settled.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// One log event: when it was written (epoch ms), where it sits in its stream, and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Epoch milliseconds, as CloudWatch stamps an event.
    pub timestamp_ms: i64,
    /// The event's byte offset in its stream file: its id, stable across restarts.
    pub offset: u64,
    /// The printed line.
    pub message: String,
}

/// A stream's lines not yet written to its file.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
}

/// The log group: a folder of stream files, each with the offset up to which it is settled.
#[derive(Debug)]
pub struct LogGroup {
    dir: PathBuf,
    name: String,
    pending: Vec<Mutex<Pending>>,
    next: AtomicUsize,
    /// One writer of the files at a time, so that lines keep their order.
    writing: Mutex<()>,
}

impl LogGroup {
    /// Opens (creating) the group `name` with `streams` streams under `dir`.
    pub fn open(dir: &Path, name: &str, streams: usize) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let pending = (0..streams.max(1)).map(|_| Mutex::new(Pending::default())).collect();
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            pending,
            next: AtomicUsize::new(0),
            writing: Mutex::new(()),
        })
    }

    /// The group's name, as a subscription payload names it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many streams.
    #[must_use]
    pub fn streams(&self) -> usize {
        self.pending.len()
    }

    /// The name of stream `index`.
    #[must_use]
    pub fn stream_name(&self, index: usize) -> String {
        format!("worker-{index}")
    }

    /// Appends one line (no newline in it) at `timestamp_ms`. Requests spread over the streams as a
    /// load balancer spreads them over workers.
    pub fn append(&self, timestamp_ms: i64, line: &str) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.pending.len();
        let mut pending = self.pending[index].lock().unwrap_or_else(PoisonError::into_inner);
        // `<epoch ms>\t<line>\n`: the line is JSON (no raw tab or newline), so the first tab splits.
        let _ = writeln!(pending.bytes, "{timestamp_ms}\t{line}");
    }

    fn file(&self, index: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.stream_name(index)))
    }

    fn checkpoint_file(&self, index: usize) -> PathBuf {
        self.dir.join(format!("{}.settled", self.stream_name(index)))
    }

    /// Writes what handlers appended to the stream files.
    pub fn write_pending(&self) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        for index in 0..self.pending.len() {
            let bytes =
                std::mem::take(&mut self.pending[index].lock().unwrap_or_else(PoisonError::into_inner).bytes);
            if bytes.is_empty() {
                continue;
            }
            let written = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.file(index))
                .and_then(|mut f| f.write_all(&bytes));
            if let Err(err) = written {
                // Back in front of what came since, for the next write: no line is dropped.
                let mut pending = self.pending[index].lock().unwrap_or_else(PoisonError::into_inner);
                let later = std::mem::replace(&mut pending.bytes, bytes);
                pending.bytes.extend_from_slice(&later);
                return Err(err);
            }
        }
        Ok(())
    }

    /// The offset up to which stream `index` is settled (counted and archived).
    pub fn settled(&self, index: usize) -> io::Result<u64> {
        match fs::read_to_string(self.checkpoint_file(index)) {
            Ok(text) => text.trim().parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.checkpoint_file(index).display()),
                )
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// Records that stream `index` is settled up to `offset` (written to a new file, then renamed, so a
    /// crash leaves the old or the new offset, never half of one).
    pub fn settle(&self, index: usize, offset: u64) -> io::Result<()> {
        let temporary = self.dir.join(format!(".{}.settled.tmp", self.stream_name(index)));
        fs::write(&temporary, offset.to_string())?;
        fs::rename(temporary, self.checkpoint_file(index))
    }

    /// The complete lines of stream `index` from `from`, and the offset after the last of them.
    pub fn read_from(&self, index: usize, from: u64) -> io::Result<(Vec<LogEvent>, u64)> {
        let file = match File::open(self.file(index)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), from)),
            Err(err) => return Err(err),
        };
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(from))?;
        let mut events = Vec::new();
        let mut offset = from;
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            // A line without its newline is still being written: it is read next time.
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            let (stamp, message) = line.trim_end_matches('\n').split_once('\t').ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stream {index} at {offset}: no timestamp"),
                )
            })?;
            let timestamp_ms = stamp.parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stream {index} at {offset}: timestamp: {e}"),
                )
            })?;
            events.push(LogEvent { timestamp_ms, offset, message: message.to_owned() });
            offset += read as u64;
        }
        Ok((events, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_round_the_streams_and_are_read_back_from_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let group = LogGroup::open(dir.path(), "/meter/local/api", 2).unwrap();
        for n in 0..5 {
            group.append(1_000 + n, &format!("{{\"n\":{n}}}"));
        }
        group.write_pending().unwrap();
        let (first, end) = group.read_from(0, 0).unwrap();
        assert_eq!(
            first.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["{\"n\":0}", "{\"n\":2}", "{\"n\":4}"]
        );
        assert_eq!(first[1].offset, first[0].offset + 13);
        let (again, same_end) = group.read_from(0, end).unwrap();
        assert!(again.is_empty());
        assert_eq!(same_end, end);
        assert_eq!(group.read_from(1, 0).unwrap().0.len(), 2);
    }

    #[test]
    fn a_settled_offset_survives_a_restart_and_an_unfinished_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let group = LogGroup::open(dir.path(), "g", 1).unwrap();
        assert_eq!(group.settled(0).unwrap(), 0);
        group.append(1, "{}");
        group.write_pending().unwrap();
        let (_, end) = group.read_from(0, 0).unwrap();
        group.settle(0, end).unwrap();
        OpenOptions::new().append(true).open(group.file(0)).unwrap().write_all(b"2\t{\"half").unwrap();
        let reopened = LogGroup::open(dir.path(), "g", 1).unwrap();
        assert_eq!(reopened.settled(0).unwrap(), end);
        assert_eq!(reopened.read_from(0, end).unwrap(), (Vec::new(), end));
    }
}
