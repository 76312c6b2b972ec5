//! The monthly job: which month an invocation issues. EventBridge's monthly schedule (for example
//! `cron(0 8 2 * ? *)`, the 2nd at 08:00 UTC, after the nightly reconcile of the last day) sends a
//! scheduled event; the job issues the month before the event's `time`. `{"month": "2026-10"}` issues
//! a given month instead.

use chrono::{DateTime, Utc};
use meter_model::Month;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct JobEvent {
    time: Option<DateTime<Utc>>,
    month: Option<String>,
    detail: Option<Detail>,
}

#[derive(Debug, Default, Deserialize)]
struct Detail {
    month: Option<String>,
}

/// An event the job cannot act on.
#[derive(Debug, thiserror::Error)]
#[error("monthly report event: {0}")]
pub struct JobEventError(String);

/// The month to issue: `month` from the event (top level or `detail`), else the month before the
/// event's `time` (or before `now`).
pub fn month_to_issue(event: &serde_json::Value, now: DateTime<Utc>) -> Result<Month, JobEventError> {
    let parsed: JobEvent = serde_json::from_value(event.clone())
        .map_err(|e| JobEventError(format!("not a scheduled event or a {{\"month\": …}} request: {e}")))?;
    match parsed.month.or_else(|| parsed.detail.and_then(|d| d.month)) {
        Some(text) => text.parse().map_err(|e| JobEventError(format!("{e}"))),
        None => Ok(Month::of(parsed.time.unwrap_or(now)).pred()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_scheduled_event_issues_the_previous_month() {
        let now = meter_model::time::parse_instant("2026-12-02T08:00:05Z").unwrap();
        let event = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
            "time": "2027-01-02T08:00:00Z", "detail": {}});
        assert_eq!(month_to_issue(&event, now).unwrap().to_string(), "2026-12");
        assert_eq!(month_to_issue(&json!({"month": "2026-10"}), now).unwrap().to_string(), "2026-10");
        assert_eq!(
            month_to_issue(&json!({"detail": {"month": "2026-09"}}), now).unwrap().to_string(),
            "2026-09"
        );
        assert_eq!(month_to_issue(&json!({}), now).unwrap().to_string(), "2026-11");
        assert!(
            month_to_issue(&json!({"month": "2026-13"}), now).unwrap_err().to_string().contains("2026-13")
        );
    }
}
