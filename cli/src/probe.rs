//! What a stage of a run costs this process: wall time, CPU time, and its peak resident memory. Read
//! from Linux's `/proc/self` (the peak reset between stages through `clear_refs`); elsewhere only the
//! wall time is known.

use std::time::{Duration, Instant};

/// Milliseconds per clock tick of `/proc/self/stat`'s times (`sysconf(_SC_CLK_TCK)` is 100 on Linux).
const MILLIS_PER_TICK: u64 = 10;

/// A stage being measured.
pub(crate) struct Probe {
    began: Instant,
    cpu_at_start: Option<(Duration, Duration)>,
}

/// What a stage took.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StageFigures {
    pub(crate) wall_seconds: f64,
    /// User CPU time; more than the wall time when several cores worked.
    pub(crate) user_seconds: Option<f64>,
    pub(crate) system_seconds: Option<f64>,
    /// The process's peak resident memory during the stage (all it holds, not only the stage's).
    #[serde(rename = "peakMiB")]
    pub(crate) peak_mib: Option<u64>,
}

/// User and system CPU time of this process so far.
fn cpu_seconds() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: the fields after it follow its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks = |i: usize| {
        fields.get(i).and_then(|v| v.parse::<u64>().ok()).map(|t| Duration::from_millis(t * MILLIS_PER_TICK))
    };
    Some((ticks(11)?, ticks(12)?))
}

/// The peak resident memory since the last reset, in MiB (rounded up).
fn peak_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.div_ceil(1024))
}

impl Probe {
    /// Starts measuring: the peak is reset to what the process holds now.
    pub(crate) fn start() -> Self {
        // "5" resets the peak resident size to the current one (proc(5), clear_refs).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Self { began: Instant::now(), cpu_at_start: cpu_seconds() }
    }

    /// The wall time so far, for stages timed in pieces.
    pub(crate) fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// What the stage took.
    pub(crate) fn finish(self, wall: Duration) -> StageFigures {
        let cpu = self.cpu_at_start.zip(cpu_seconds());
        StageFigures {
            wall_seconds: wall.as_secs_f64(),
            user_seconds: cpu.map(|((u0, _), (u1, _))| u1.saturating_sub(u0).as_secs_f64()),
            system_seconds: cpu.map(|((_, s0), (_, s1))| s1.saturating_sub(s0).as_secs_f64()),
            peak_mib: peak_mib(),
        }
    }
}
