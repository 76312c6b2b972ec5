//! UTC time buckets (days and calendar months) and the injected clock.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, Utc};

/// Formats an instant the way every table and file stores it: RFC 3339, milliseconds, `Z`.
#[must_use]
pub fn format_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an instant stored by [`format_instant`] (or any RFC 3339 time, converted to UTC).
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.to_utc())
}

/// A UTC calendar day, written `YYYY-MM-DD`: the sort key of `UsageCounters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NaiveDate);

impl Day {
    /// The first day a counter can be on (the Unix epoch): the start of a key's whole history.
    pub const EARLIEST: Self = Self(match NaiveDate::from_ymd_opt(1970, 1, 1) {
        Some(day) => day,
        None => NaiveDate::MIN,
    });
    /// The last day written with four year digits: the end of a key's whole history.
    pub const LATEST: Self = Self(match NaiveDate::from_ymd_opt(9999, 12, 31) {
        Some(day) => day,
        None => NaiveDate::MAX,
    });

    /// The UTC day an instant falls on.
    #[must_use]
    pub fn of(at: DateTime<Utc>) -> Self {
        // `naive_utc` skips the offset arithmetic of `date_naive`, which is zero for UTC anyway.
        Self(at.naive_utc().date())
    }

    /// A day from its calendar date.
    #[must_use]
    pub fn from_date(date: NaiveDate) -> Self {
        Self(date)
    }

    /// The calendar date.
    #[must_use]
    pub fn date(self) -> NaiveDate {
        self.0
    }

    /// The day's first instant (00:00 UTC).
    #[must_use]
    pub fn start(self) -> DateTime<Utc> {
        self.0.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// The month this day belongs to.
    #[must_use]
    pub fn month(self) -> Month {
        Month { year: self.0.year(), month: self.0.month() }
    }

    /// The next day.
    #[must_use]
    pub fn succ(self) -> Self {
        Self(self.0 + Duration::days(1))
    }

    /// The previous day.
    #[must_use]
    pub fn pred(self) -> Self {
        Self(self.0 - Duration::days(1))
    }
}

serde_as_text!(Day);
serde_as_text!(Month);

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // chrono's own `YYYY-MM-DD`, without parsing a format string on every call: rollups and
        // reports print a day per row.
        fmt::Display::fmt(&self.0, f)
    }
}

/// A day or month that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what} (expected {format})")]
pub struct BucketParseError {
    input: String,
    what: &'static str,
    format: &'static str,
}

impl FromStr for Day {
    type Err = BucketParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BucketParseError { input: s.to_owned(), what: "day", format: "YYYY-MM-DD" };
        if s.len() != 10 {
            return Err(err());
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Self).map_err(|_| err())
    }
}

/// A UTC calendar month, written `YYYY-MM`: the billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// A month from its year and number (1–12); `None` when out of range.
    #[must_use]
    pub fn new(year: i32, month: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, 1).map(|_| Self { year, month })
    }

    /// The UTC month an instant falls in.
    #[must_use]
    pub fn of(at: DateTime<Utc>) -> Self {
        Day::of(at).month()
    }

    /// The first day of the month.
    #[must_use]
    pub fn first_day(self) -> Day {
        // `new` and `of` only build months whose first day exists.
        Day(NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN))
    }

    /// The last day of the month.
    #[must_use]
    pub fn last_day(self) -> Day {
        self.succ().first_day().pred()
    }

    /// The following month.
    #[must_use]
    pub fn succ(self) -> Self {
        if self.month == 12 {
            Self { year: self.year + 1, month: 1 }
        } else {
            Self { year: self.year, month: self.month + 1 }
        }
    }

    /// The preceding month.
    #[must_use]
    pub fn pred(self) -> Self {
        if self.month == 1 {
            Self { year: self.year - 1, month: 12 }
        } else {
            Self { year: self.year, month: self.month - 1 }
        }
    }

    /// Every day of the month, in order.
    pub fn days(self) -> impl Iterator<Item = Day> {
        let last = self.last_day();
        std::iter::successors(Some(self.first_day()), move |d| (*d < last).then(|| d.succ()))
    }

    /// Whether a day lies in this month.
    #[must_use]
    pub fn contains(self, day: Day) -> bool {
        day.month() == self
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = BucketParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BucketParseError { input: s.to_owned(), what: "month", format: "YYYY-MM" };
        let (year, month) = s.split_once('-').ok_or_else(err)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(err());
        }
        let year = year.parse().map_err(|_| err())?;
        let month = month.parse().map_err(|_| err())?;
        Self::new(year, month).ok_or_else(err)
    }
}

/// The source of "now" for everything that depends on time, injected so tests control it.
pub trait Clock: Send + Sync {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system's clock moved by a fixed offset: it starts at a chosen instant and runs at the real
/// rate from there. The command line runs on it so that a test (or an operator replaying a past
/// night) can say which "now" a run happens at, while everything that measures elapsed time (`meter
/// serve`'s buffers, a rotation's grace period) still sees time pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShiftedClock {
    offset: Duration,
}

impl ShiftedClock {
    /// The system clock itself (no offset).
    #[must_use]
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock whose "now" is `at` at the moment of this call.
    #[must_use]
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self { offset: at.signed_duration_since(Utc::now()) }
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        // Saturates rather than panics: `starting_at` took an instant chrono can hold, and the real
        // clock has moved forward by little since.
        Utc::now().checked_add_signed(self.offset).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `at` (millisecond precision).
    #[must_use]
    pub fn new(at: DateTime<Utc>) -> Self {
        Self { millis: AtomicI64::new(at.timestamp_millis()) }
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        self.millis.store(at.timestamp_millis(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.millis.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.millis.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_bucket_by_utc_date_at_the_edges() {
        let last_ms = parse_instant("2026-11-30T23:59:59.999Z").unwrap();
        let first_ms = parse_instant("2026-12-01T00:00:00.000Z").unwrap();
        assert_eq!(Day::of(last_ms).to_string(), "2026-11-30");
        assert_eq!(Day::of(first_ms).to_string(), "2026-12-01");
        assert_eq!(Month::of(last_ms).to_string(), "2026-11");
        assert_eq!(Month::of(first_ms).to_string(), "2026-12");
        // An offset is converted, not ignored.
        assert_eq!(Day::of(parse_instant("2026-12-01T00:30:00+01:00").unwrap()).to_string(), "2026-11-30");
    }

    #[test]
    fn months_parse_strictly_and_know_their_days() {
        let feb: Month = "2028-02".parse().unwrap();
        assert_eq!(feb.days().count(), 29);
        assert_eq!(feb.last_day().to_string(), "2028-02-29");
        assert_eq!("2026-12".parse::<Month>().unwrap().succ().to_string(), "2027-01");
        assert_eq!("2027-01".parse::<Month>().unwrap().pred().to_string(), "2026-12");
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00", "abcd-ef"] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        for bad in ["2026-02-30", "2026-2-01", "2026-02-01T00:00"] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = parse_instant("2026-11-29T00:00:00Z").unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::milliseconds(1500));
        assert_eq!(format_instant(clock.now()), "2026-11-29T00:00:01.500Z");
    }

    #[test]
    fn a_shifted_clock_starts_where_told_and_runs_at_the_real_rate() {
        let start = parse_instant("2028-02-29T23:59:59Z").unwrap();
        let clock = ShiftedClock::starting_at(start);
        let first = clock.now();
        assert!(first >= start && first - start < Duration::seconds(5), "{first}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.now() - first >= Duration::milliseconds(20), "it runs");
        let system = ShiftedClock::system().now() - Utc::now();
        assert!(system.abs() < Duration::seconds(1), "no offset: {system}");
        let far = ShiftedClock::starting_at(DateTime::<Utc>::MAX_UTC);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(far.now(), DateTime::<Utc>::MAX_UTC, "saturates instead of panicking");
    }
}
