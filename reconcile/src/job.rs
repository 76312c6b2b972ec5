//! The scheduled reconcile job (CONTRACTS.md , "late data"): what range an invocation reconciles.
//!
//! EventBridge invokes it with a scheduled event (`{"detail-type": "Scheduled Event", "time": …}`);
//! it reconciles yesterday and the `lookback_days` days before it, in UTC, relative to the event's
//! time. A backfill passes explicit days instead: `{"from": "2026-10-01", "to": "2026-10-31"}`, at the
//! top level or under `detail` (EventBridge's custom events). Two other tasks share the function:
//! `{"task": "refresh-parked"}` (the stack's schedule every
//! [`PARKED_REFRESH_MINUTES`](crate::PARKED_REFRESH_MINUTES)) brings parked usage into the key totals,
//! and `{"task": "recount-keys"}` recounts every key's totals (a repair).

use chrono::{DateTime, Utc};
use meter_model::Day;
use serde::Deserialize;

/// The default number of days re-checked before yesterday.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 3;
/// The most days one invocation reconciles (a backfill of a longer range is several invocations).
pub const MAX_RANGE_DAYS: i64 = 62;

#[derive(Debug, Default, Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
    task: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct JobEvent {
    time: Option<DateTime<Utc>>,
    #[serde(flatten)]
    range: Range,
    detail: Option<Range>,
}

/// What one invocation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Reconcile these days.
    Reconcile {
        /// The first day.
        from: Day,
        /// The last day.
        to: Day,
    },
    /// Bring the parked usage into the key totals.
    RefreshParked,
    /// Recount every key's totals.
    RecountKeys,
}

/// The task an event names (`task`, at the top level or under `detail`); without one, a reconcile of
/// the days [`days_to_reconcile`] finds.
pub fn task_of(
    event: &serde_json::Value,
    now: DateTime<Utc>,
    lookback_days: u32,
) -> Result<Task, JobEventError> {
    let parsed: JobEvent = serde_json::from_value(event.clone())
        .map_err(|e| JobEventError(format!("not a scheduled event or a {{from, to}} backfill: {e}")))?;
    let task = parsed.range.task.as_deref().or(parsed.detail.as_ref().and_then(|d| d.task.as_deref()));
    match task {
        None | Some("reconcile") => {
            let (from, to) = days_to_reconcile(event, now, lookback_days)?;
            Ok(Task::Reconcile { from, to })
        }
        Some("refresh-parked") => Ok(Task::RefreshParked),
        Some("recount-keys") => Ok(Task::RecountKeys),
        Some(other) => Err(JobEventError(format!(
            "unknown task {other:?}; the tasks are reconcile, refresh-parked and recount-keys"
        ))),
    }
}

/// An event the job cannot act on.
#[derive(Debug, thiserror::Error)]
#[error("reconcile job event: {0}")]
pub struct JobEventError(String);

/// The days an invocation reconciles: explicit `from`/`to`, or yesterday and `lookback_days` before
/// it relative to the event's `time` (or `now` when the event has none).
pub fn days_to_reconcile(
    event: &serde_json::Value,
    now: DateTime<Utc>,
    lookback_days: u32,
) -> Result<(Day, Day), JobEventError> {
    let parsed: JobEvent = serde_json::from_value(event.clone())
        .map_err(|e| JobEventError(format!("not a scheduled event or a {{from, to}} backfill: {e}")))?;
    let explicit = match (&parsed.range, &parsed.detail) {
        (Range { from: Some(from), to: Some(to), .. }, _) => Some((from, to)),
        (_, Some(Range { from: Some(from), to: Some(to), .. })) => Some((from, to)),
        (Range { from: None, to: None, .. }, None | Some(Range { from: None, to: None, .. })) => None,
        _ => return Err(JobEventError("a backfill needs both from and to".into())),
    };
    let (from, to) = match explicit {
        Some((from, to)) => {
            let parse = |text: &str| text.parse::<Day>().map_err(|e| JobEventError(format!("{e}")));
            (parse(from)?, parse(to)?)
        }
        None => {
            let yesterday = Day::of(parsed.time.unwrap_or(now)).pred();
            let from = Day::from_date(yesterday.date() - chrono::Duration::days(i64::from(lookback_days)));
            (from, yesterday)
        }
    };
    if from > to {
        return Err(JobEventError(format!("from {from} is after to {to}")));
    }
    if (to.date() - from.date()).num_days() >= MAX_RANGE_DAYS {
        return Err(JobEventError(format!(
            "{from}..{to} is longer than {MAX_RANGE_DAYS} days; split the backfill into several invocations"
        )));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        meter_model::time::parse_instant(text).unwrap()
    }

    fn day(text: &str) -> Day {
        text.parse().unwrap()
    }

    #[test]
    fn a_scheduled_event_reconciles_yesterday_and_the_lookback_in_utc() {
        // The shape EventBridge sends to a scheduled target.
        let event = json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-12-01T06:30:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/reconcile"],
            "detail": {}
        });
        let now = at("2026-12-01T06:30:02Z");
        assert_eq!(days_to_reconcile(&event, now, 3).unwrap(), (day("2026-11-27"), day("2026-11-30")));
        assert_eq!(days_to_reconcile(&event, now, 0).unwrap(), (day("2026-11-30"), day("2026-11-30")));
    }

    #[test]
    fn a_backfill_names_its_days_at_the_top_or_in_detail() {
        let now = at("2026-12-01T06:30:00Z");
        let top = json!({"from": "2026-10-01", "to": "2026-10-31"});
        assert_eq!(days_to_reconcile(&top, now, 3).unwrap(), (day("2026-10-01"), day("2026-10-31")));
        let detail = json!({"detail-type": "backfill", "detail": {"from": "2026-10-05", "to": "2026-10-05"}});
        assert_eq!(days_to_reconcile(&detail, now, 3).unwrap(), (day("2026-10-05"), day("2026-10-05")));
    }

    #[test]
    fn an_event_names_its_task_or_reconciles() {
        let now = at("2026-12-01T06:30:00Z");
        let task = |event| task_of(&event, now, 3);
        assert_eq!(task(json!({"task": "refresh-parked"})).unwrap(), Task::RefreshParked);
        assert_eq!(task(json!({"detail": {"task": "recount-keys"}})).unwrap(), Task::RecountKeys);
        assert_eq!(
            task(json!({"from": "2026-10-01", "to": "2026-10-02"})).unwrap(),
            Task::Reconcile { from: day("2026-10-01"), to: day("2026-10-02") }
        );
        let err = task(json!({"task": "refresh"})).unwrap_err().to_string();
        assert!(err.contains("unknown task \"refresh\"") && err.contains("refresh-parked"), "{err}");
    }

    #[test]
    fn bad_events_are_clear_errors() {
        let now = at("2026-12-01T06:30:00Z");
        for (event, says) in [
            (json!({"from": "2026-10-01"}), "both from and to"),
            (json!({"from": "2026-10-31", "to": "2026-10-01"}), "after"),
            (json!({"from": "2026-13-01", "to": "2026-10-01"}), "2026-13-01"),
            (json!({"from": "2026-01-01", "to": "2026-12-31"}), "split the backfill"),
            (json!({"time": "yesterday"}), "not a scheduled event"),
        ] {
            let err = days_to_reconcile(&event, now, 3).unwrap_err().to_string();
            assert!(err.contains(says), "{event}: {err}");
        }
    }
}
