//! An API's traffic as CloudWatch Logs delivers it to the log group's subscription, with the faults the
//! real system meets, and the ground truth from the generator's own bookkeeping.
//!
//! The traffic: customers on several plans with one or more keys each, Zipf key popularity (exponent
//! 1.1), a status mix of 90% 2xx with some 4xx/5xx and a few 1xx/3xx, routes that the backend does not
//! mark billable. Either a month with a daily cycle (the demo's default), or a steady rate for some
//! hours ([`Profile`]: the cost reference traffic). Each request is logged by one of the backend's log
//! streams (one per container), and CloudWatch delivers each stream's new events every `window`
//! (2 s): a delivery holds one stream's events of one window, as real subscriptions send them.
//!
//! Faults, each with a rate: deliveries that arrive twice (CloudWatch retrying a delivery that had
//! landed), late events (delivered after their day, some from the previous month), malformed usage
//! lines, usage of unknown keys, and keys revoked mid-month (whose usage still counts). The faults of
//! an invocation (the counter store down, Firehose retrying an invocation) are drawn by whoever plays
//! Firehose, with the rates in [`Faults`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use meter_model::{Day, Month, Tally};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;

/// Most events in one delivery (CloudWatch Logs sends at most 10,000 events or 1 MB at once).
pub const MAX_EVENTS_PER_DELIVERY: usize = 10_000;

/// How often CloudWatch Logs delivers each log stream's new events to a subscription.
pub const DEFAULT_WINDOW_MS: i64 = 2_000;

/// Generation works a minute of simulated time at a time, so that any volume fits in memory.
const SLICE_MS: i64 = 60_000;

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

    /// Whether a draw from `rng` falls within the rate.
    pub fn hit(self, rng: &mut Xoshiro256PlusPlus) -> bool {
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
    /// Deliveries that arrive twice (CloudWatch retrying a delivery that had in fact landed).
    pub redelivered: Rate,
    /// Invocations whose counter writes fail (DynamoDB throttling or down): their usage reaches the
    /// archive, not the counters, until reconcile.
    pub counters_unavailable: Rate,
    /// Invocations Firehose runs twice (a timeout after the work was done): the same records again.
    pub invocation_retried: Rate,
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
                counters_unavailable: r(10_000),
                invocation_retried: r(10_000),
                late: r(2_000),
                malformed: r(1_000),
                unknown_keys: r(1_000),
                revoked_keys: r(50_000),
            },
            "heavy" => Self {
                redelivered: r(200_000),
                counters_unavailable: r(100_000),
                invocation_retried: r(100_000),
                late: r(20_000),
                malformed: r(10_000),
                unknown_keys: r(10_000),
                revoked_keys: r(200_000),
            },
            other => return Err(format!("{other:?} is not a fault preset: use none, default or heavy")),
        })
    }
}

/// A steady reference traffic, for pricing (the cost issue's small, medium and large APIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Its name.
    pub name: &'static str,
    /// Requests per second, in tenths (1.2 req/s is 12).
    pub rate_tenths: u64,
    /// Backend log streams (containers).
    pub streams: u32,
    /// API keys.
    pub keys: u32,
}

impl Profile {
    /// The reference profiles: `small`, `medium`, `large`.
    pub const ALL: [Self; 3] = [
        Self { name: "small", rate_tenths: 12, streams: 2, keys: 500 },
        Self { name: "medium", rate_tenths: 1_150, streams: 20, keys: 5_000 },
        Self { name: "large", rate_tenths: 11_500, streams: 100, keys: 50_000 },
    ];

    /// A profile by name.
    pub fn named(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("{name:?} is not a traffic profile: use small, medium or large"))
    }

    /// "115 req/s, 20 log streams, 5000 keys".
    #[must_use]
    pub fn describe(&self) -> String {
        let rate = Decimal::from(self.rate_tenths) / Decimal::TEN;
        format!("{} req/s, {} log streams, {} keys", rate.normalize(), self.streams, self.keys)
    }
}

/// How much traffic, over what time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volume {
    /// `events` requests over the whole month with a daily cycle, logged by `streams` streams.
    Month {
        /// Requests.
        events: u64,
        /// Log streams.
        streams: u32,
    },
    /// A profile's steady rate for `minutes`, from the month's first midnight.
    Steady {
        /// The traffic.
        profile: Profile,
        /// Simulated minutes.
        minutes: u32,
    },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How much traffic (late events of the previous month come on top).
    pub volume: Volume,
    /// API keys.
    pub keys: u32,
    /// The month.
    pub month: Month,
    /// Seed: the same seed gives the same traffic.
    pub seed: u64,
    /// Fault rates.
    pub faults: Faults,
    /// How often CloudWatch delivers each log stream, in milliseconds.
    pub window_ms: i64,
}

impl SimConfig {
    /// A month of `events` requests over `keys` keys and two log streams.
    #[must_use]
    pub fn month(events: u64, keys: u32, month: Month, seed: u64, faults: Faults) -> Self {
        Self {
            volume: Volume::Month { events, streams: 2 },
            keys,
            month,
            seed,
            faults,
            window_ms: DEFAULT_WINDOW_MS,
        }
    }

    /// A profile's traffic for `minutes`.
    #[must_use]
    pub fn steady(profile: Profile, minutes: u32, month: Month, seed: u64, faults: Faults) -> Self {
        Self {
            volume: Volume::Steady { profile, minutes },
            keys: profile.keys,
            month,
            seed,
            faults,
            window_ms: DEFAULT_WINDOW_MS,
        }
    }

    fn streams(&self) -> u32 {
        match self.volume {
            Volume::Month { streams, .. } => streams.max(1),
            Volume::Steady { profile, .. } => profile.streams.max(1),
        }
    }

    /// Minutes simulated.
    fn slices(&self) -> u32 {
        match self.volume {
            Volume::Month { .. } => u32::try_from(self.month.days().count()).unwrap_or(31) * 24 * 60,
            Volume::Steady { minutes, .. } => {
                minutes.min(u32::try_from(self.month.days().count()).unwrap_or(28) * 24 * 60)
            }
        }
    }
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

/// One delivery of the log group's subscription: one log stream's events of one window.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The gzip CloudWatch Logs payload: Firehose's record, what the transformer reads. Kept as
    /// bytes: the base64 and JSON around it ([`Delivery::event`]) are what a Lambda subscription
    /// receives, and only files need them.
    pub record: Vec<u8>,
    /// Log events in it.
    pub log_events: u64,
    /// Bytes of its log messages (what CloudWatch Logs bills as ingested, before its own per-event
    /// overhead).
    pub log_bytes: u64,
    /// When it reaches the subscription's destination.
    pub arrives_at: DateTime<Utc>,
    /// A second arrival of a delivery that had landed already.
    pub is_redelivery: bool,
}

impl Delivery {
    /// Bytes of the gzip payload: what Firehose receives and bills as the record.
    #[must_use]
    pub fn record_bytes(&self) -> u64 {
        self.record.len() as u64
    }

    /// The Lambda event a subscription delivers it as (`{"awslogs":{"data":…}}`).
    #[must_use]
    pub fn event(&self) -> String {
        crate::cloudwatch::subscription_event_of(&self.record)
    }
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

/// The exponent of the keys' Zipf popularity.
const ZIPF_EXPONENT: f64 = 1.1;

/// A log line waiting for its delivery: (stream, log time, line).
type Pending = (u32, DateTime<Utc>, String);

/// The traffic generator, a minute at a time, so that any volume fits in memory.
pub struct Simulator {
    config: SimConfig,
    rng: Xoshiro256PlusPlus,
    keys: Vec<SimKey>,
    /// Cumulative Zipf weights of the keys, scaled to `u64`.
    popularity: Vec<u64>,
    truth: Truth,
    next_slice: u32,
    slices: u32,
    /// The month's requests and how many are generated, and the daily cycle's weight in all and so
    /// far, for the month's even spread.
    month_events: u64,
    month_events_done: u64,
    month_weight_total: u64,
    month_weight_done: u64,
    delivery_index: u64,
    event_index: u64,
    /// Late lines waiting for a later slice: (deliver in slice, stream, log time, line).
    late: Vec<(u32, Pending)>,
    /// Deliveries that will arrive a second time: (arrives in slice, delivery).
    again: Vec<(u32, Delivery)>,
    gzipper: crate::cloudwatch::Gzipper,
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
        let keys: Vec<SimKey> = (0..config.keys.max(1))
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
        let popularity = zipf_table(keys.len());
        let slices = config.slices();
        let month_events = match config.volume {
            Volume::Month { events, .. } => events,
            Volume::Steady { .. } => 0,
        };
        Self {
            config,
            rng,
            keys,
            popularity,
            truth: Truth::default(),
            next_slice: 0,
            slices,
            month_events,
            month_events_done: 0,
            month_weight_total: (0..slices).map(|s| u64::from(HOURLY[(s / 60 % 24) as usize])).sum(),
            month_weight_done: 0,
            delivery_index: 0,
            event_index: 0,
            late: Vec::new(),
            again: Vec::new(),
            gzipper: crate::cloudwatch::Gzipper::default(),
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

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn pick_key(&mut self) -> usize {
        let total = self.popularity.last().copied().unwrap_or(1);
        let draw = self.rng.random_range(0..total);
        self.popularity.partition_point(|&c| c <= draw).min(self.keys.len() - 1)
    }

    fn status(&mut self) -> u16 {
        match self.rng.random_range(0..1000) {
            0..870 => 200,
            870..895 => 201,
            895..900 => 204,
            900..928 => 304,
            928..930 => 101,
            930..975 => [400, 401, 403, 404, 429][self.rng.random_range(0..5usize)],
            _ => [500, 502, 503, 504][self.rng.random_range(0..4usize)],
        }
    }

    fn request_id(&mut self) -> String {
        let v: u128 = self.rng.random();
        // A UUID's 8-4-4-4-12 groups of the value's hex digits, written in one pass: a line each.
        let mut id = String::with_capacity(36);
        for (i, shift) in (0..32).rev().map(|digit| digit * 4).enumerate() {
            if matches!(i, 8 | 12 | 16 | 20) {
                id.push('-');
            }
            let nibble = u32::try_from((v >> shift) & 0xf).unwrap_or(0);
            id.push(char::from_digit(nibble, 16).unwrap_or('0'));
        }
        id
    }

    /// One usage line and what it counts for. The month's traffic comes from Lambda functions (the
    /// three line shapes); a profile's from containers, which print the bare line.
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
        let stamp = meter_model::time::format_instant(at);
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
        if matches!(self.config.volume, Volume::Steady { .. }) {
            return json;
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

    fn slice_start(&self, slice: u32) -> DateTime<Utc> {
        start_of(self.config.month.first_day()) + Duration::milliseconds(i64::from(slice) * SLICE_MS)
    }

    /// Requests in a slice: the profile's rate, or the month's requests spread by the daily cycle.
    fn requests_in(&mut self, slice: u32) -> u64 {
        match self.config.volume {
            Volume::Steady { profile, .. } => {
                // Tenths of a request per second over a minute; the remainder carried by chance.
                let tenths = profile.rate_tenths * 60;
                tenths / 10 + u64::from(self.rng.random_range(0..10) < tenths % 10)
            }
            Volume::Month { .. } => {
                // The cumulative share of the month's weight so far, so that rounding never piles up.
                self.month_weight_done += u64::from(HOURLY[(slice / 60 % 24) as usize]);
                let target = u128::from(self.month_events) * u128::from(self.month_weight_done)
                    / u128::from(self.month_weight_total.max(1));
                let target = u64::try_from(target).unwrap_or(self.month_events).min(self.month_events);
                let n = target - self.month_events_done;
                self.month_events_done = target;
                n
            }
        }
    }

    /// The next minute's deliveries, in order of arrival; `None` after the last. The day is the
    /// minute's.
    pub fn next_slice(&mut self) -> Option<(Day, Vec<Delivery>)> {
        if self.next_slice >= self.slices {
            return None;
        }
        let slice = self.next_slice;
        self.next_slice += 1;
        let start = self.slice_start(slice);
        let streams = self.config.streams();
        let mut lines: Vec<Pending> = Vec::new();
        if slice == 0 && self.config.faults.late.0 > 0 {
            // Late events of the previous month's last day, delivered in the first minute of this one.
            let previous = start_of(self.config.month.pred().last_day());
            // As many as the first day of the run would have sent late: a day's share of the month, or
            // the profile's rate over the run's first day.
            let n = match self.config.volume {
                Volume::Month { events, .. } => events / u64::from(self.slices / 1440).max(1),
                Volume::Steady { profile, minutes } => profile.rate_tenths * 6 * u64::from(minutes.min(1440)),
            } * u64::from(self.config.faults.late.0)
                / 1_000_000;
            let mut old = Vec::new();
            for _ in 0..n {
                let at = previous + Duration::milliseconds(self.rng.random_range(0..86_400_000));
                let line = self.usage_line(at);
                self.truth.previous_month_events += 1;
                old.push((self.rng.random_range(0..streams), at, line));
            }
            self.late.extend(old.into_iter().map(|p| (0, p)));
        }
        let count = self.requests_in(slice);
        for _ in 0..count {
            let at = start + Duration::milliseconds(self.rng.random_range(0..SLICE_MS));
            let stream = self.rng.random_range(0..streams);
            let line = self.usage_line(at);
            if self.config.faults.late.hit(&mut self.rng) && slice + 1 < self.slices {
                // Delivered late: CloudWatch retrying after up to three days (or the run's end).
                let delay = self.rng.random_range(1..=(3 * 1440).min(self.slices - slice - 1));
                self.late.push((slice + delay, (stream, at, line)));
            } else {
                lines.push((stream, at, line));
            }
        }
        if matches!(self.config.volume, Volume::Month { .. }) {
            // Other log lines of the backend, about one in ten.
            for _ in 0..lines.len() / 10 {
                let at = start + Duration::milliseconds(self.rng.random_range(0..SLICE_MS));
                let id = self.request_id();
                let line = match self.rng.random_range(0..3) {
                    0 => format!("START RequestId: {id} Version: $LATEST"),
                    1 => format!("END RequestId: {id}"),
                    _ => format!("REPORT RequestId: {id}\tDuration: 12.34 ms\tBilled Duration: 13 ms"),
                };
                lines.push((self.rng.random_range(0..streams), at, line));
            }
        }
        let window = self.config.window_ms.max(1);
        lines.sort_by_key(|(stream, at, _)| (*stream, at.timestamp_millis().div_euclid(window), *at));
        let mut deliveries = Vec::new();
        for group in lines.chunk_by(|a, b| {
            a.0 == b.0
                && a.1.timestamp_millis().div_euclid(window) == b.1.timestamp_millis().div_euclid(window)
        }) {
            let window_end = group[0].1.timestamp_millis().div_euclid(window) * window + window;
            let arrives = DateTime::from_timestamp_millis(window_end).unwrap_or(start);
            for chunk in group.chunks(MAX_EVENTS_PER_DELIVERY) {
                deliveries.push(self.delivery(chunk, arrives));
            }
        }
        // Late lines due now: a retried delivery per stream and day, arriving now with old events.
        let (due, waiting): (Vec<_>, Vec<_>) = self.late.drain(..).partition(|(on, _)| *on == slice);
        self.late = waiting;
        let mut due: Vec<Pending> = due.into_iter().map(|(_, p)| p).collect();
        due.sort_by_key(|(stream, at, _)| (*stream, Day::of(*at), *at));
        for group in due.chunk_by(|a, b| a.0 == b.0 && Day::of(a.1) == Day::of(b.1)) {
            let arrives = start + Duration::milliseconds(self.rng.random_range(0..SLICE_MS));
            for chunk in group.chunks(MAX_EVENTS_PER_DELIVERY) {
                deliveries.push(self.delivery(chunk, arrives));
            }
        }
        // Redeliveries: some of this minute's deliveries arrive again up to five minutes later.
        let mut again = Vec::new();
        for delivery in &deliveries {
            if self.config.faults.redelivered.hit(&mut self.rng) {
                let delay = self.rng.random_range(5_000..300_000);
                let mut copy = delivery.clone();
                copy.arrives_at = delivery.arrives_at + Duration::milliseconds(delay);
                copy.is_redelivery = true;
                let in_slice =
                    u32::try_from((copy.arrives_at - self.slice_start(0)).num_milliseconds() / SLICE_MS)
                        .unwrap_or(slice)
                        .clamp(slice, self.slices - 1);
                again.push((in_slice, copy));
            }
        }
        self.again.extend(again);
        let (now, later): (Vec<_>, Vec<_>) = self.again.drain(..).partition(|(on, _)| *on <= slice);
        self.again = later;
        deliveries.extend(now.into_iter().map(|(_, d)| d));
        deliveries.sort_by_key(|d| d.arrives_at);
        Some((Day::of(start), deliveries))
    }

    fn delivery(&mut self, lines: &[Pending], arrives_at: DateTime<Utc>) -> Delivery {
        self.delivery_index += 1;
        let stream = format!("2026/01/01/[$LATEST]{:032x}", lines.first().map_or(0, |l| l.0));
        // Written directly rather than through serde_json::Value: generation is most of the demo's
        // time at volume. Messages are escaped by serde_json, straight into the payload.
        let mut payload = Vec::with_capacity(lines.iter().map(|l| l.2.len() + 100).sum::<usize>() + 256);
        let _ = write!(
            payload,
            r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/api","logStream":"{stream}","subscriptionFilters":["usage"],"logEvents":["#
        );
        let mut log_bytes = 0;
        for (n, (_, at, message)) in lines.iter().enumerate() {
            self.event_index += 1;
            log_bytes += message.len() as u64;
            // CloudWatch's ids are 56-digit strings.
            let _ = write!(
                payload,
                r#"{}{{"id":"{:056}","timestamp":{},"message":"#,
                if n == 0 { "" } else { "," },
                self.event_index,
                at.timestamp_millis()
            );
            // Writing a string into a vector cannot fail.
            let _ = serde_json::to_writer(&mut payload, message);
            payload.push(b'}');
        }
        payload.extend_from_slice(b"]}");
        let compressed = self.gzipper.gzip(&payload);
        Delivery {
            record: compressed,
            log_events: lines.len() as u64,
            log_bytes,
            arrives_at,
            is_redelivery: false,
        }
    }
}

/// Cumulative Zipf weights of `n` keys by rank, scaled so the total fits `u64` comfortably.
fn zipf_table(n: usize) -> Vec<u64> {
    let mut total = 0u64;
    (1..=n.max(1))
        .map(|rank| {
            #[allow(
                clippy::cast_precision_loss,
                clippy::float_arithmetic,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let weight = (1e12 / (rank as f64).powf(ZIPF_EXPONENT)) as u64;
            total += weight.max(1);
            total
        })
        .collect()
}

/// `meter simulate`: writes the deliveries as the log group's subscription sends them (one file per
/// day of arrival, redeliveries included), the keys, and the ground truth under `out`. Returns a
/// summary.
pub fn write_files(out: &std::path::Path, config: SimConfig) -> Result<String, SimWriteError> {
    use std::io::Write;
    let deliveries_dir = out.join("deliveries");
    std::fs::create_dir_all(&deliveries_dir).map_err(|e| SimWriteError::new(&deliveries_dir, e))?;
    let month = config.month;
    let mut sim = Simulator::new(config);
    let (mut deliveries, mut log_events, mut redeliveries) = (0u64, 0u64, 0u64);
    let mut current: Option<(Day, std::path::PathBuf, std::io::BufWriter<std::fs::File>)> = None;
    while let Some((_, batch)) = sim.next_slice() {
        for delivery in &batch {
            let day = Day::of(delivery.arrives_at);
            if current.as_ref().is_none_or(|(d, _, _)| *d != day) {
                if let Some((_, path, mut file)) = current.take() {
                    file.flush().map_err(|e| SimWriteError::new(&path, e))?;
                }
                let path = deliveries_dir.join(format!("{day}.json"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| SimWriteError::new(&path, e))?;
                current = Some((day, path, std::io::BufWriter::new(file)));
            }
            if let Some((_, path, file)) = current.as_mut() {
                writeln!(file, "{}", delivery.event()).map_err(|e| SimWriteError::new(path, e))?;
            }
            deliveries += 1;
            log_events += delivery.log_events;
            redeliveries += u64::from(delivery.is_redelivery);
        }
    }
    if let Some((_, path, mut file)) = current.take() {
        file.flush().map_err(|e| SimWriteError::new(&path, e))?;
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
        "wrote {deliveries} deliveries ({log_events} log events, {redeliveries} deliveries arriving a second time) of \
         {month} to {}:\n  deliveries/DAY.json  what the log group's subscription sends, by day of arrival (read by \
         `meter realtime` and `meter archive`)\n  keys.csv, truth.csv  the keys and the distinct calls per key and day: \
         {} billable, {} failed, {} in all\n",
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
        SimConfig::month(20_000, 40, "2026-11".parse().unwrap(), 7, Faults::preset(faults).unwrap())
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

    fn run(config: SimConfig) -> (Vec<Delivery>, Truth) {
        let mut sim = Simulator::new(config);
        let mut all = Vec::new();
        while let Some((_, deliveries)) = sim.next_slice() {
            all.extend(deliveries);
        }
        (all, sim.truth().clone())
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let events = |config| run(config).0.into_iter().map(|d| (d.record, d.arrives_at)).collect::<Vec<_>>();
        let small =
            |faults| SimConfig { volume: Volume::Month { events: 4_000, streams: 2 }, ..config(faults) };
        assert_eq!(events(small("heavy")), events(small("heavy")));
    }

    #[test]
    fn without_faults_the_truth_counts_every_event_of_the_month_in_arrival_order() {
        let (deliveries, truth) = run(config("none"));
        assert!(deliveries.iter().all(|d| !d.is_redelivery));
        assert!(deliveries.windows(2).all(|w| w[0].arrives_at <= w[1].arrives_at));
        let month: Month = "2026-11".parse().unwrap();
        assert_eq!(truth.month_total(month).usage_count, 20_000);
        assert_eq!(truth.malformed, 0);
    }

    #[test]
    fn a_profile_delivers_each_stream_every_window_with_a_few_events_each() {
        let profile = Profile::named("medium").unwrap();
        let (deliveries, truth) =
            run(SimConfig::steady(profile, 5, "2026-11".parse().unwrap(), 3, Faults::default()));
        let events: u64 = deliveries.iter().map(|d| d.log_events).sum();
        assert_eq!(events, 115 * 300, "115 req/s for five minutes");
        assert_eq!(truth.per_key_day.values().map(|t| t.usage_count).sum::<u64>(), events);
        // 20 streams, one delivery each per 2 s window: 11.5 events a delivery on average.
        let per_delivery = events / deliveries.len() as u64;
        assert!((10..=12).contains(&per_delivery), "{per_delivery} events a delivery");
        // Each delivery is one stream's window: it arrives at the window's end.
        assert!(deliveries.iter().all(|d| d.arrives_at.timestamp_millis() % DEFAULT_WINDOW_MS == 0));
        // Zipf popularity: the most popular key has several percent of the calls, the least a few.
        let first =
            truth.per_key_day.iter().filter(|((k, _), _)| *k == 0).map(|(_, t)| t.usage_count).sum::<u64>();
        assert!(first * 100 / events >= 5, "top key {first} of {events}");
        assert!(Profile::named("huge").is_err());
    }

    #[test]
    fn redelivered_deliveries_arrive_again_later_unchanged() {
        let faults = Faults { redelivered: Rate::per_million(200_000), ..Faults::default() };
        let (deliveries, _) = run(SimConfig::month(5_000, 10, "2026-11".parse().unwrap(), 1, faults));
        let again: Vec<&Delivery> = deliveries.iter().filter(|d| d.is_redelivery).collect();
        assert!(!again.is_empty());
        for copy in again {
            let first = deliveries.iter().find(|d| !d.is_redelivery && d.record == copy.record).unwrap();
            assert!(first.arrives_at < copy.arrives_at);
        }
    }
}
