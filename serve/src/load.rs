//! A load generator for `meter serve`: many keep-alive connections sending the same request, at a
//! fixed total rate or as fast as the server answers, for a fixed time; it stops by itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::latency::Histogram;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The server.
    pub address: SocketAddr,
    /// The request path (`/v1/items/1`).
    pub path: String,
    /// The identity header and the key it carries.
    pub header: String,
    /// The key.
    pub key: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests per second over all connections; `None`: as fast as answers come.
    pub rate: Option<u64>,
    /// How long to send.
    pub duration: Duration,
}

/// What came back.
#[derive(Default)]
pub struct LoadReport {
    /// Responses per status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no response (connection errors).
    pub errors: u64,
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Round trips, as the client saw them.
    pub latency: Histogram,
}

impl LoadReport {
    /// Responses received.
    #[must_use]
    pub fn responses(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Responses per second.
    #[must_use]
    pub fn throughput(&self) -> u64 {
        let per_second = u128::from(self.responses()) * 1_000_000_000 / self.elapsed.as_nanos().max(1);
        u64::try_from(per_second).unwrap_or(u64::MAX)
    }
}

/// Runs the plan; returns when every connection has stopped.
pub async fn run(plan: &LoadPlan) -> LoadReport {
    let report = Arc::new(std::sync::Mutex::new(LoadReport::default()));
    let request = Arc::new(
        format!("GET {} HTTP/1.1\r\nhost: localhost\r\n{}: {}\r\n\r\n", plan.path, plan.header, plan.key)
            .into_bytes(),
    );
    let started = Instant::now();
    let deadline = started + plan.duration;
    let connections = plan.connections.max(1);
    // Each connection sends every `interval`, offset so that the total rate is even.
    let interval =
        plan.rate.map(|rate| Duration::from_nanos(connections as u64 * 1_000_000_000 / rate.max(1)));
    let tasks: Vec<_> = (0..connections)
        .map(|n| {
            let report = report.clone();
            let request = request.clone();
            let address = plan.address;
            let offset = |every: Duration| {
                every * u32::try_from(n).unwrap_or(0) / u32::try_from(connections).unwrap_or(1)
            };
            let first = interval.map_or(started, |every| started + offset(every));
            tokio::spawn(
                async move { connection(address, &request, first, interval, deadline, &report).await },
            )
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let mut report = std::mem::take(&mut *report.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    report.elapsed = started.elapsed();
    report
}

async fn connection(
    address: SocketAddr,
    request: &[u8],
    first: Instant,
    interval: Option<Duration>,
    deadline: Instant,
    report: &std::sync::Mutex<LoadReport>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(4096);
    let mut next = first;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    let latency = Histogram::default();
    while next < deadline {
        if interval.is_some() {
            tokio::time::sleep_until(next.into()).await;
        }
        let sent = Instant::now();
        if stream.is_none() {
            match TcpStream::connect(address).await {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    stream = Some(connected);
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    next = advance(next, interval);
                    continue;
                }
            }
        }
        let Some(open) = stream.as_mut() else { continue };
        match exchange(open, request, &mut buffer).await {
            Ok(status) => {
                latency.record(sent.elapsed());
                *statuses.entry(status).or_insert(0) += 1;
            }
            Err(_) => {
                errors += 1;
                stream = None;
                buffer.clear();
            }
        }
        next = advance(next, interval);
    }
    let mut report = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (status, count) in statuses {
        *report.by_status.entry(status).or_insert(0) += count;
    }
    report.errors += errors;
    report.latency.merge(&latency);
}

fn advance(next: Instant, interval: Option<Duration>) -> Instant {
    match interval {
        Some(every) => next + every,
        None => Instant::now(),
    }
}

/// One request and its response on a keep-alive connection; the status code.
async fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = memchr::memmem::find(buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).map_err(std::io::Error::other)?;
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status"))?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            return Ok(status);
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}
