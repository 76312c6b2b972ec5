//! Plan quotas and usage alerts (ARCHITECTURE.md, "Plan quotas and usage alerts"): a quota of billable
//! calls per UTC month, hard (refused beyond it) or soft (served; the tiers price the overage), and
//! alert thresholds in percent of it. The rules here decide what a month's new total crosses; the
//! stores keep the totals and the marks.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::time::Month;

/// The most a threshold may be, in percent: beyond ten times the quota an alert says nothing new.
pub const MAX_ALERT_PERCENT: u16 = 1_000;

/// What happens to calls beyond a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaMode {
    /// Refused with 429 until the month ends.
    Hard,
    /// Served; the plan's tiers price them on the invoice.
    Soft,
}

impl fmt::Display for QuotaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
        })
    }
}

impl FromStr for QuotaMode {
    type Err = QuotaError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "hard" => Ok(Self::Hard),
            "soft" => Ok(Self::Soft),
            other => Err(QuotaError(format!("quota mode {other:?} is neither \"hard\" nor \"soft\""))),
        }
    }
}

serde_as_text!(QuotaMode);

/// A quota or alert setting that cannot be used; says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuotaError(String);

/// A plan's quota and alerts, as its keys carry them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaTerms {
    /// Billable calls per UTC month.
    pub calls: u64,
    /// Beyond it: refused or priced.
    pub mode: QuotaMode,
    /// Thresholds in percent of `calls`, ascending, each announced once per customer and month.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<u16>,
}

impl QuotaTerms {
    /// Checked terms: a quota of at least one call, thresholds from 1 to [`MAX_ALERT_PERCENT`]
    /// percent, each once (kept ascending).
    pub fn new(calls: u64, mode: QuotaMode, mut alerts: Vec<u16>) -> Result<Self, QuotaError> {
        if calls == 0 {
            return Err(QuotaError("a quota of 0 calls refuses every call: give at least 1".into()));
        }
        if let Some(bad) = alerts.iter().find(|&&t| t == 0 || t > MAX_ALERT_PERCENT) {
            return Err(QuotaError(format!(
                "alert threshold {bad} is not between 1 and {MAX_ALERT_PERCENT} percent of the quota"
            )));
        }
        alerts.sort_unstable();
        if let Some(pair) = alerts.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(QuotaError(format!("alert threshold {} is listed twice", pair[0])));
        }
        Ok(Self { calls, mode, alerts })
    }

    /// The calls at which threshold `percent` is reached: the first whole call at or past it.
    #[must_use]
    pub fn calls_at(&self, percent: u16) -> u64 {
        let exact = u128::from(self.calls) * u128::from(percent);
        u64::try_from(exact.div_ceil(100)).unwrap_or(u64::MAX)
    }

    /// What a month's total moving from `before` to `after` crosses.
    #[must_use]
    pub fn crossings(&self, before: u64, after: u64) -> Crossings {
        let crossed = |at: u64| before < at && at <= after;
        Crossings {
            thresholds: self.alerts.iter().copied().filter(|&t| crossed(self.calls_at(t))).collect(),
            // A hard quota refuses from the call after the quota'th: the quota's calls are all served.
            refuses: self.mode == QuotaMode::Hard && before <= self.calls && after > self.calls,
        }
    }

    /// The terms a customer holding keys of several quotas is held to: the fewest calls.
    pub fn strictest<'a>(terms: impl IntoIterator<Item = &'a Self>) -> Option<&'a Self> {
        terms.into_iter().min_by_key(|terms| terms.calls)
    }

    /// The thresholds as stored: `50,80,100` (empty: none).
    #[must_use]
    pub fn alerts_text(&self) -> String {
        self.alerts.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    }

    /// Terms read back from their stored parts, checked like new ones.
    pub fn from_stored(calls: u64, mode: &str, alerts: &str) -> Result<Self, QuotaError> {
        let alerts = alerts
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse().map_err(|_| QuotaError(format!("alert threshold {t:?} is not a whole percent")))
            })
            .collect::<Result<_, _>>()?;
        Self::new(calls, mode.parse()?, alerts)
    }

    /// Whether a month's total of `used` calls is refused under these terms.
    #[must_use]
    pub fn refuses_at(&self, used: u64) -> bool {
        self.mode == QuotaMode::Hard && used > self.calls
    }
}

/// What one step of a month's total crossed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crossings {
    /// Alert thresholds (percent) reached by this step, ascending.
    pub thresholds: Vec<u16>,
    /// Whether this step took a hard quota's total past the quota.
    pub refuses: bool,
}

/// When a month's quota resets: 00:00 UTC of the next month.
#[must_use]
pub fn resets_at(month: Month) -> DateTime<Utc> {
    month.succ().first_day().start()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(calls: u64, mode: QuotaMode, alerts: &[u16]) -> QuotaTerms {
        QuotaTerms::new(calls, mode, alerts.to_vec()).unwrap()
    }

    #[test]
    fn thresholds_are_reached_at_the_first_whole_call_at_or_past_them() {
        let t = terms(3, QuotaMode::Soft, &[50, 100]);
        assert_eq!((t.calls_at(50), t.calls_at(100)), (2, 3));
        assert_eq!(terms(10_000, QuotaMode::Hard, &[80]).calls_at(80), 8_000);
        assert_eq!(terms(u64::MAX, QuotaMode::Hard, &[1_000]).calls_at(1_000), u64::MAX);
    }

    #[test]
    fn each_step_names_only_what_it_crossed_and_a_hard_quota_refuses_past_its_last_call() {
        let t = terms(100, QuotaMode::Hard, &[50, 80, 100]);
        assert_eq!(t.crossings(0, 49), Crossings::default());
        assert_eq!(t.crossings(49, 50), Crossings { thresholds: vec![50], refuses: false });
        assert_eq!(t.crossings(50, 100), Crossings { thresholds: vec![80, 100], refuses: false });
        assert_eq!(t.crossings(100, 101), Crossings { thresholds: vec![], refuses: true });
        assert_eq!(t.crossings(0, 500), Crossings { thresholds: vec![50, 80, 100], refuses: true });
        assert_eq!(t.crossings(101, 200), Crossings::default(), "refused once, when it crossed");
        assert!(!t.refuses_at(100) && t.refuses_at(101));
        let soft = terms(100, QuotaMode::Soft, &[100]);
        assert_eq!(soft.crossings(0, 500), Crossings { thresholds: vec![100], refuses: false });
        assert!(!soft.refuses_at(500));
    }

    #[test]
    fn terms_that_cannot_work_are_refused_with_what_to_fix() {
        let err =
            |calls, alerts: &[u16]| QuotaTerms::new(calls, QuotaMode::Hard, alerts.to_vec()).unwrap_err().0;
        assert!(err(0, &[]).contains("at least 1"));
        assert!(err(10, &[0]).contains("between 1 and 1000"));
        assert!(err(10, &[1_001]).contains("between 1 and 1000"));
        assert!(err(10, &[80, 50, 80]).contains("listed twice"));
        assert_eq!(terms(10, QuotaMode::Hard, &[100, 50]).alerts, vec![50, 100]);
        assert!("firm".parse::<QuotaMode>().unwrap_err().0.contains("neither"));
        assert_eq!("soft".parse::<QuotaMode>().unwrap(), QuotaMode::Soft);
    }

    #[test]
    fn terms_survive_their_stored_form_and_bad_stored_forms_are_named() {
        let t = terms(10_000, QuotaMode::Soft, &[50, 80, 100]);
        assert_eq!(t.alerts_text(), "50,80,100");
        assert_eq!(QuotaTerms::from_stored(10_000, "soft", &t.alerts_text()).unwrap(), t);
        assert_eq!(QuotaTerms::from_stored(5, "hard", "").unwrap().alerts, Vec::<u16>::new());
        assert!(QuotaTerms::from_stored(5, "hard", "50,x").unwrap_err().0.contains("\"x\""));
    }

    #[test]
    fn a_month_resets_at_midnight_utc_of_the_next() {
        let month = Month::new(2026, 12).unwrap();
        assert_eq!(resets_at(month).to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }
}
