//! A month of an API's traffic as CloudWatch Logs delivers it to the two
//! subscriptions, with the faults the real system meets, and the ground truth from the generator's
//! own bookkeeping.
//!
//! The traffic: customers on several plans with one or more keys each, skewed key popularity (the
//! product of two uniform draws favours the first keys), a daily cycle, a status mix of mostly 2xx with
//! some 4xx/5xx and a few 1xx/3xx, routes that the backend does not mark billable, and the three line
//! shapes (bare, Lambda text format, Lambda JSON format) between other log lines.
//!
//! Faults, each with a rate: deliveries redelivered to the realtime processor, deliveries lost before
//! it (but archived), deliveries archived twice, late events (delivered after their day, some from the
//! previous month), malformed usage lines, usage of unknown keys, and keys revoked mid-month (whose
//! usage still counts).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use meter_model::{Day, Month, Tally};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;

/// Events per delivery (a CloudWatch Logs subscription delivers up to ~10,000 in one invocation).
pub const EVENTS_PER_DELIVERY: usize = 5_000;

/// The simulation's files could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct SimWriteError {
    path: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl SimWriteError {
    fn new(path: &std::path::Path, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { path: path.display().to_string(), source: Box::new(err) }
    }
}

/// A rate, as a fraction (`0.01` = 1%), kept as parts per million so no float is involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate(u32);

impl Rate {
    /// Parts per million.
    #[must_use]
    pub const fn per_million(ppm: u32) -> Self {
        Self(ppm)
    }

    fn hit(self, rng: &mut Xoshiro256PlusPlus) -> bool {
        self.0 > 0 && rng.random_range(0..1_000_000) < self.0
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value: Decimal =
            text.trim().parse().map_err(|_| format!("{text:?} is not a number such as 0.01"))?;
        if value.is_sign_negative() || value > Decimal::ONE {
            return Err(format!("{text} is not a rate between 0 and 1"));
        }
        let ppm = (value * Decimal::from(1_000_000)).round();
        Ok(Self(rust_decimal::prelude::ToPrimitive::to_u32(&ppm).unwrap_or(1_000_000)))
    }
}

/// The fault rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Deliveries the realtime processor receives twice.
    pub redelivered: Rate,
    /// Deliveries lost before the realtime processor (archived all the same).
    pub lost: Rate,
    /// Deliveries the archive receives twice (Firehose is at-least-once).
    pub archived_twice: Rate,
    /// Events delivered after their day (some from the previous month).
    pub late: Rate,
    /// Usage lines that break the contract.
    pub malformed: Rate,
    /// Usage of keys that do not exist.
    pub unknown_keys: Rate,
    /// Keys revoked mid-month.
    pub revoked_keys: Rate,
}

impl Faults {
    /// A named preset: `none`, `default` or `heavy`.
    pub fn preset(name: &str) -> Result<Self, String> {
        let r = Rate::per_million;
        Ok(match name {
            "none" => Self::default(),
            "default" => Self {
                redelivered: r(20_000),
                lost: r(10_000),
                archived_twice: r(10_000),
                late: r(2_000),
                malformed: r(1_000),
                unknown_keys: r(1_000),
                revoked_keys: r(50_000),
            },
            "heavy" => Self {
                redelivered: r(200_000),
                lost: r(100_000),
                archived_twice: r(100_000),
                late: r(20_000),
                malformed: r(10_000),
                unknown_keys: r(10_000),
                revoked_keys: r(200_000),
            },
            other => return Err(format!("{other:?} is not a fault preset: use none, default or heavy")),
        })
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Distinct requests in the month (late events of the previous month come on top).
    pub events: u64,
    /// API keys.
    pub keys: u32,
    /// The month.
    pub month: Month,
    /// Seed: the same seed gives the same traffic.
    pub seed: u64,
    /// Fault rates.
    pub faults: Faults,
}

/// A simulated key.
#[derive(Debug, Clone)]
pub struct SimKey {
    /// Its id (12 characters, like real ids).
    pub id: String,
    /// Its customer.
    pub email: String,
    /// Its plan (`None`: the pricing's default).
    pub plan: Option<&'static str>,
    /// When it is revoked, if it is.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One delivery of the log group's subscription and what happens to it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The Lambda event JSON (`{"awslogs":{"data":…}}`).
    pub event: String,
    /// Log events in it.
    pub log_events: u64,
    /// Bytes of its log messages (what CloudWatch Logs bills as ingested).
    pub log_bytes: u64,
    /// Lost before the realtime processor.
    pub lost: bool,
    /// Delivered twice to the realtime processor.
    pub redelivered: bool,
    /// Archived twice.
    pub archived_twice: bool,
}

/// The ground truth: distinct requests per key and day by the counting rules.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Per key index and day.
    pub per_key_day: BTreeMap<(usize, Day), Tally>,
    /// Usage of unknown key ids per day (never billed).
    pub orphans: Tally,
    /// Malformed usage lines (rejected, never counted).
    pub malformed: u64,
    /// Events of the previous month delivered late.
    pub previous_month_events: u64,
}

impl Truth {
    /// The month's totals over known keys.
    #[must_use]
    pub fn month_total(&self, month: Month) -> Tally {
        self.per_key_day.iter().filter(|((_, d), _)| month.contains(*d)).map(|(_, t)| *t).sum()
    }
}

const ROUTES: [(&str, &str, bool); 6] = [
    ("GET", "/v1/items/{id}", true),
    ("GET", "/v1/items", true),
    ("POST", "/v1/items", true),
    ("GET", "/v1/search", true),
    ("GET", "/v1/quota", false),
    ("GET", "/health", false),
];

/// Relative traffic per UTC hour: quiet at night, busy in the afternoon.
const HOURLY: [u32; 24] = [2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 10, 10, 10, 10, 9, 9, 8, 7, 6, 5, 4, 3, 2];

const PLANS: [Option<&str>; 3] = [None, None, Some("pro")];

/// The traffic generator, a day at a time, so that any volume fits in memory.
pub struct Simulator {
    config: SimConfig,
    rng: Xoshiro256PlusPlus,
    keys: Vec<SimKey>,
    truth: Truth,
    next_day: u32,
    days: u32,
    delivery_index: u64,
    event_index: u64,
    /// Late events waiting for a later day's deliveries: (deliver on day index, line, timestamp).
    late: Vec<(u32, String, DateTime<Utc>)>,
}

fn start_of(day: Day) -> DateTime<Utc> {
    day.date().and_time(NaiveTime::MIN).and_utc()
}

impl Simulator {
    /// A generator for `config`.
    #[must_use]
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let month_start = start_of(config.month.first_day());
        let customers = (config.keys / 2).max(1);
        let keys = (0..config.keys.max(1))
            .map(|n| {
                // Key n belongs to customer n mod customers: most customers have two keys.
                let customer = n % customers;
                let revoked_at = config
                    .faults
                    .revoked_keys
                    .hit(&mut rng)
                    .then(|| month_start + Duration::seconds(rng.random_range(86_400..28 * 86_400)));
                SimKey {
                    id: format!("sim{n:09}"),
                    email: format!("customer{customer:05}@example.com"),
                    plan: PLANS[customer as usize % PLANS.len()],
                    revoked_at,
                }
            })
            .collect();
        let days = u32::try_from(config.month.days().count()).unwrap_or(31);
        Self {
            config,
            rng,
            keys,
            truth: Truth::default(),
            next_day: 0,
            days,
            delivery_index: 0,
            event_index: 0,
            late: Vec::new(),
        }
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &[SimKey] {
        &self.keys
    }

    /// The ground truth so far.
    #[must_use]
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    fn pick_key(&mut self) -> usize {
        let n = self.keys.len() as u64;
        let skewed = self.rng.random_range(0..n) * self.rng.random_range(1..=n) / n;
        usize::try_from(skewed).unwrap_or(0)
    }

    fn pick_time(&mut self, day: Day) -> DateTime<Utc> {
        let total: u32 = HOURLY.iter().sum();
        let mut draw = self.rng.random_range(0..total);
        let mut hour = 0;
        while draw >= HOURLY[hour] {
            draw -= HOURLY[hour];
            hour += 1;
        }
        let ms_in_hour = self.rng.random_range(0..3_600_000i64);
        start_of(day) + Duration::milliseconds(i64::try_from(hour).unwrap_or(0) * 3_600_000 + ms_in_hour)
    }

    fn status(&mut self) -> u16 {
        match self.rng.random_range(0..1000) {
            0..880 => 200,
            880..910 => 201,
            910..920 => 204,
            920..928 => 304,
            928..930 => 101,
            930..975 => [400, 401, 403, 404, 429][self.rng.random_range(0..5usize)],
            _ => [500, 502, 503, 504][self.rng.random_range(0..4usize)],
        }
    }

    fn request_id(&mut self) -> String {
        let v: u128 = self.rng.random();
        let hex = format!("{v:032x}");
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }

    /// One usage line, wrapped in one of the three shapes, and what it counts for.
    fn usage_line(&mut self, at: DateTime<Utc>) -> String {
        let malformed = self.config.faults.malformed.hit(&mut self.rng);
        let unknown = self.config.faults.unknown_keys.hit(&mut self.rng);
        let (key_index, key_id) = if unknown {
            (None, format!("unknown{:05}", self.rng.random_range(0..1000)))
        } else {
            let k = self.pick_key();
            (Some(k), self.keys[k].id.clone())
        };
        let (method, resource, marked) = ROUTES[self.rng.random_range(0..ROUTES.len())];
        let status = self.status();
        let request_id = self.request_id();
        let stamp = at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let latency = self.rng.random_range(3..900);
        let mut json = String::with_capacity(220);
        if malformed {
            // A status code as a string: a usage line that breaks the contract, rejected.
            let _ = write!(
                json,
                r#"{{"type":"API_USAGE","requestId":"{request_id}","keyId":"{key_id}","timestamp":"{stamp}","statusCode":"{status}","shouldCount":true}}"#
            );
            self.truth.malformed += 1;
        } else {
            let _ = write!(
                json,
                r#"{{"type":"API_USAGE","requestId":"{request_id}","keyId":"{key_id}","timestamp":"{stamp}","statusCode":{status},"shouldCount":{marked},"method":"{method}","resource":"{resource}","latencyMs":{latency}}}"#
            );
            let tally = Tally::of_call(status, marked);
            match key_index {
                Some(k) => self.truth.per_key_day.entry((k, Day::of(at))).or_default().add(tally),
                None => self.truth.orphans.add(tally),
            }
        }
        let lambda_request = &request_id[..8];
        match self.rng.random_range(0..3) {
            0 => json,
            1 => format!("{stamp}\t{lambda_request}-0000-4000-8000-000000000000\tINFO\t{json}"),
            _ => format!(
                r#"{{"timestamp":"{stamp}","level":"INFO","requestId":"{lambda_request}-0000-4000-8000-000000000000","message":{json}}}"#
            ),
        }
    }

    /// The next day's deliveries, in time order; `None` after the month's last day.
    pub fn next_day(&mut self) -> Option<(Day, Vec<Delivery>)> {
        if self.next_day >= self.days {
            return None;
        }
        let index = self.next_day;
        self.next_day += 1;
        let day = Day::from_date(self.config.month.first_day().date() + Duration::days(i64::from(index)));
        let per_day = self.config.events / u64::from(self.days);
        let count = if index + 1 == self.days {
            self.config.events - per_day * u64::from(self.days - 1)
        } else {
            per_day
        };

        // Events of the day, some held back for a later day's deliveries. A late delivery is CloudWatch
        // retrying one: its log events keep their own times, and it holds nothing of today.
        let mut lines: Vec<(DateTime<Utc>, String)> =
            Vec::with_capacity(usize::try_from(count).unwrap_or(0) * 11 / 10);
        let mut late: BTreeMap<Day, Vec<(DateTime<Utc>, String)>> = BTreeMap::new();
        if index == 0 && self.config.faults.late.0 > 0 {
            // Late events of the previous month's last day, delivered on the first day of this one.
            let previous = self.config.month.pred().last_day();
            let n = count * u64::from(self.config.faults.late.0) / 1_000_000;
            for _ in 0..n {
                let at = self.pick_time(previous);
                let line = self.usage_line(at);
                self.truth.previous_month_events += 1;
                late.entry(previous).or_default().push((at, line));
            }
        }
        for _ in 0..count {
            let at = self.pick_time(day);
            let line = self.usage_line(at);
            if self.config.faults.late.hit(&mut self.rng) && index + 1 < self.days {
                let deliver_on = self.rng.random_range(index + 1..self.days.min(index + 4));
                self.late.push((deliver_on, line, at));
            } else {
                lines.push((at, line));
            }
        }
        let (due, waiting): (Vec<_>, Vec<_>) = self.late.drain(..).partition(|(on, _, _)| *on == index);
        self.late = waiting;
        for (_, line, at) in due {
            late.entry(Day::of(at)).or_default().push((at, line));
        }
        // Other log lines of the backend, about one in ten.
        let other = lines.len() / 10;
        for _ in 0..other {
            let at = self.pick_time(day);
            let id = self.request_id();
            let line = match self.rng.random_range(0..3) {
                0 => format!("START RequestId: {id} Version: $LATEST"),
                1 => format!("END RequestId: {id}"),
                _ => format!("REPORT RequestId: {id}\tDuration: 12.34 ms\tBilled Duration: 13 ms"),
            };
            lines.push((at, line));
        }
        lines.sort_by_key(|(at, _)| *at);
        let mut deliveries: Vec<Delivery> =
            lines.chunks(EVENTS_PER_DELIVERY).map(|chunk| self.delivery(chunk)).collect();
        for (_, mut retried) in late {
            retried.sort_by_key(|(at, _)| *at);
            deliveries.extend(retried.chunks(EVENTS_PER_DELIVERY).map(|chunk| self.delivery(chunk)));
        }
        Some((day, deliveries))
    }

    fn delivery(&mut self, lines: &[(DateTime<Utc>, String)]) -> Delivery {
        self.delivery_index += 1;
        let stream = format!("2026/01/01/[$LATEST]{:032x}", self.delivery_index);
        // Written directly rather than through serde_json::Value: generation is most of the demo's
        // time at volume. Messages are escaped by serde_json.
        let mut payload =
            String::with_capacity(lines.iter().map(|(_, m)| m.len() + 100).sum::<usize>() + 256);
        let _ = write!(
            payload,
            r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/api","logStream":"{stream}","subscriptionFilters":["usage"],"logEvents":["#
        );
        let mut log_bytes = 0;
        for (n, (at, message)) in lines.iter().enumerate() {
            self.event_index += 1;
            log_bytes += message.len() as u64;
            let escaped = serde_json::to_string(message).unwrap_or_default();
            // CloudWatch's ids are 56-digit strings.
            let _ = write!(
                payload,
                r#"{}{{"id":"{:056}","timestamp":{},"message":{escaped}}}"#,
                if n == 0 { "" } else { "," },
                self.event_index,
                at.timestamp_millis()
            );
        }
        payload.push_str("]}");
        let event = crate::cloudwatch::encode_subscription_event(payload.as_bytes());
        let faults = self.config.faults;
        Delivery {
            event,
            log_events: lines.len() as u64,
            log_bytes,
            lost: faults.lost.hit(&mut self.rng),
            redelivered: faults.redelivered.hit(&mut self.rng),
            archived_twice: faults.archived_twice.hit(&mut self.rng),
        }
    }
}

/// `meter simulate`: writes the month's deliveries as the two subscriptions receive them, the keys,
/// and the ground truth under `out`. Returns a summary.
pub fn write_files(out: &std::path::Path, config: SimConfig) -> Result<String, SimWriteError> {
    use std::io::Write;
    let realtime_dir = out.join("realtime");
    let archive_dir = out.join("archive");
    for dir in [&realtime_dir, &archive_dir] {
        std::fs::create_dir_all(dir).map_err(|e| SimWriteError::new(dir, e))?;
    }
    let open = |path: std::path::PathBuf| {
        std::fs::File::create(&path).map(std::io::BufWriter::new).map_err(|e| SimWriteError::new(&path, e))
    };
    let month = config.month;
    let mut sim = Simulator::new(config);
    let (mut deliveries, mut log_events) = (0u64, 0u64);
    while let Some((day, batch)) = sim.next_day() {
        let name = format!("{day}.json");
        let (realtime_path, archive_path) = (realtime_dir.join(&name), archive_dir.join(&name));
        let mut realtime = open(realtime_path.clone())?;
        let mut archive = open(archive_path.clone())?;
        for delivery in &batch {
            deliveries += 1;
            log_events += delivery.log_events;
            let to_realtime = if delivery.lost { 0 } else { 1 + usize::from(delivery.redelivered) };
            for _ in 0..to_realtime {
                writeln!(realtime, "{}", delivery.event)
                    .map_err(|e| SimWriteError::new(&realtime_path, e))?;
            }
            for _ in 0..1 + usize::from(delivery.archived_twice) {
                writeln!(archive, "{}", delivery.event).map_err(|e| SimWriteError::new(&archive_path, e))?;
            }
        }
        realtime.flush().map_err(|e| SimWriteError::new(&realtime_path, e))?;
        archive.flush().map_err(|e| SimWriteError::new(&archive_path, e))?;
    }
    let keys_path = out.join("keys.csv");
    let write_keys = || -> Result<(), csv::Error> {
        let mut keys = csv::Writer::from_path(&keys_path)?;
        keys.write_record(["key_id", "customer_email", "plan", "revoked_at"])?;
        for key in sim.keys() {
            let revoked = key.revoked_at.map(meter_model::time::format_instant).unwrap_or_default();
            keys.write_record([key.id.as_str(), &key.email, key.plan.unwrap_or(""), &revoked])?;
        }
        Ok(keys.flush()?)
    };
    write_keys().map_err(|e| SimWriteError::new(&keys_path, e))?;
    let truth_path = out.join("truth.csv");
    let write_truth = || -> Result<(), csv::Error> {
        let mut truth = csv::Writer::from_path(&truth_path)?;
        truth.write_record(["key_id", "day", "successful_calls", "failed_calls", "usage_count"])?;
        for ((key, day), tally) in &sim.truth().per_key_day {
            truth.write_record([
                sim.keys()[*key].id.as_str(),
                &day.to_string(),
                &tally.successful_calls.to_string(),
                &tally.failed_calls.to_string(),
                &tally.usage_count.to_string(),
            ])?;
        }
        Ok(truth.flush()?)
    };
    write_truth().map_err(|e| SimWriteError::new(&truth_path, e))?;
    let total = sim.truth().month_total(month);
    Ok(format!(
        "wrote {deliveries} deliveries ({log_events} log events) of {month} to {}:\n  realtime/*.json  what the realtime \
         processor receives (lost deliveries missing, redelivered ones twice)\n  archive/*.json   what Firehose receives \
         (some twice)\n  keys.csv, truth.csv  the keys and the distinct calls per key and day: {} billable, {} failed, \
         {} in all\n",
        out.display(),
        total.successful_calls,
        total.failed_calls,
        total.usage_count
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(faults: &str) -> SimConfig {
        SimConfig {
            events: 20_000,
            keys: 40,
            month: "2026-11".parse().unwrap(),
            seed: 7,
            faults: Faults::preset(faults).unwrap(),
        }
    }

    #[test]
    fn rates_parse_without_floats() {
        assert_eq!("0.01".parse::<Rate>().unwrap(), Rate::per_million(10_000));
        assert_eq!("1".parse::<Rate>().unwrap(), Rate::per_million(1_000_000));
        assert_eq!("0".parse::<Rate>().unwrap(), Rate::per_million(0));
        assert!("1.5".parse::<Rate>().is_err());
        assert!("-0.1".parse::<Rate>().is_err());
        assert!("lots".parse::<Rate>().is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let run = |faults| {
            let mut sim = Simulator::new(config(faults));
            let mut all = Vec::new();
            while let Some((_, deliveries)) = sim.next_day() {
                all.extend(deliveries.into_iter().map(|d| (d.event, d.lost, d.redelivered)));
            }
            (all, sim.truth().per_key_day.clone())
        };
        assert_eq!(run("heavy"), run("heavy"));
    }

    #[test]
    fn without_faults_the_truth_counts_every_event_of_the_month() {
        let mut sim = Simulator::new(config("none"));
        let mut usage_lines = 0;
        while let Some((_, deliveries)) = sim.next_day() {
            for d in deliveries {
                assert!(!d.lost && !d.redelivered && !d.archived_twice);
                usage_lines += d.event.len();
            }
        }
        assert!(usage_lines > 0);
        let month: Month = "2026-11".parse().unwrap();
        assert_eq!(sim.truth().month_total(month).usage_count, 20_000);
        assert_eq!(sim.truth().malformed, 0);
    }
}
