//! CloudWatch Embedded Metric Format: one JSON line on stdout that CloudWatch turns into metrics,
//! with no API calls from the function.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The namespace of every metric the project emits.
pub const NAMESPACE: &str = "Meter";

/// The unit of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Bytes => "Bytes",
        }
    }
}

/// Metrics of one invocation, rendered as one EMF line.
#[derive(Debug, Clone)]
pub struct MetricLine {
    function: String,
    at: DateTime<Utc>,
    values: Vec<(&'static str, u64, Unit)>,
}

impl MetricLine {
    /// Metrics of `function` at `at`, with the dimension `Function`.
    #[must_use]
    pub fn new(function: &str, at: DateTime<Utc>) -> Self {
        Self { function: function.to_owned(), at, values: Vec::new() }
    }

    /// Adds a metric.
    #[must_use]
    pub fn with(mut self, name: &'static str, value: u64, unit: Unit) -> Self {
        self.values.push((name, value, unit));
        self
    }

    /// The EMF JSON line.
    #[must_use]
    pub fn render(&self) -> String {
        let definitions: Vec<Value> =
            self.values.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()})).collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.at.timestamp_millis(),
                "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Function"]], "Metrics": definitions}],
            }),
        );
        root.insert("Function".into(), Value::String(self.function.clone()));
        for (name, value, _) in &self.values {
            root.insert((*name).into(), Value::from(*value));
        }
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_emf_envelope() {
        let at = meter_model::time::parse_instant("2026-11-29T14:00:00Z").unwrap();
        let line = MetricLine::new("archive-transformer", at).with("EventsRead", 10, Unit::Count).with(
            "Duration",
            7,
            Unit::Milliseconds,
        );
        let value: Value = serde_json::from_str(&line.render()).unwrap();
        assert_eq!(value["_aws"]["Timestamp"], 1_795_960_800_000_i64);
        assert_eq!(value["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Meter");
        assert_eq!(value["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function"]]));
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Metrics"][1],
            json!({"Name": "Duration", "Unit": "Milliseconds"})
        );
        assert_eq!(value["Function"], "archive-transformer");
        assert_eq!(value["EventsRead"], 10);
    }
}
