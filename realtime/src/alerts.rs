//! Announcing the usage alerts the counters claimed (each once per customer, month and threshold, in
//! the store): published as the EventBridge-shaped event, one message each, and logged.

use meter_model::Publisher;
use meter_model::alerts::UsageAlert;

/// The subject of a usage alert's message.
pub const SUBJECT: &str = "meter: usage threshold reached";

/// Publishes each of `alerts` on `publisher` and logs it. A failed publish is an error an operator
/// must act on: the threshold is claimed, so no later buffer announces it again; the log line holds the
/// whole event to forward by hand.
pub async fn announce(alerts: &[UsageAlert], publisher: &impl Publisher) {
    for alert in alerts {
        let event = alert.event().to_string();
        log(alert);
        if let Err(err) = publisher.publish_message(SUBJECT, &event).await {
            tracing::error!(
                error = %meter_model::error_chain(&err),
                %event,
                "a usage alert could not be published; forward this event by hand"
            );
        }
    }
}

/// The log line of a usage alert: who, which month, which threshold, the figures (never a key).
pub fn log(alert: &UsageAlert) {
    tracing::info!(
        customer = %alert.customer,
        period = %alert.period,
        threshold = alert.threshold,
        used = alert.used,
        quota = alert.quota,
        "usage alert"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use meter_model::quota::QuotaMode;
    use meter_model::time::parse_instant;
    use meter_model::{Email, KeyId, Month, StoreError};

    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String)>>);

    impl Publisher for Recorded {
        async fn publish_message(&self, subject: &str, message: &str) -> Result<(), StoreError> {
            self.0.lock().unwrap().push((subject.to_owned(), message.to_owned()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_alert_is_published_once_as_its_event() {
        let alert = UsageAlert {
            customer: Email::parse("ada@example.com").unwrap(),
            keys: vec![KeyId::parse("aaaaaaaaaaaa").unwrap()],
            plan: None,
            used: 8_000,
            quota: 10_000,
            mode: QuotaMode::Hard,
            period: Month::new(2026, 12).unwrap(),
            threshold: 80,
            as_of: parse_instant("2026-12-07T10:00:00Z").unwrap(),
        };
        let recorded = Recorded::default();
        announce(std::slice::from_ref(&alert), &recorded).await;
        let sent = recorded.0.into_inner().unwrap();
        assert_eq!(sent.len(), 1);
        let event: serde_json::Value = serde_json::from_str(&sent[0].1).unwrap();
        assert_eq!(sent[0].0, SUBJECT);
        assert_eq!(
            event,
            serde_json::json!({"source": "meter", "detail-type": "meter.usage.threshold",
                "time": "2026-12-07T10:00:00.000Z",
                "detail": {"customer": "ada@example.com", "keys": ["aaaaaaaaaaaa"], "plan": null, "used": 8000,
                    "quota": 10000, "mode": "hard", "period": "2026-12", "threshold": 80,
                    "asOf": "2026-12-07T10:00:00.000Z"}})
        );
    }
}
