//! A key's open days on its `ApiKeys` item (CONTRACTS.md §2): the usage the transformer counted since
//! reconcile last set each day, kept beside the lifetime totals so that one write per key and buffer
//! moves both. Each open day is four top-level attributes, `s#<day>`, `f#<day>`, `u#<day>` (the
//! counters, added with `ADD`, which creates a missing attribute) and `t#<day>` (the day's latest call).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use meter_model::time::parse_instant;
use meter_model::{Day, DayUsage, KeyId, StoreError, Tally};

use super::item::{Item, corrupt};

/// The attribute of one open day's counter or latest call: `kind` is `s`, `f`, `u` or `t`.
pub(super) fn attribute(kind: char, day: Day) -> String {
    format!("{kind}#{day}")
}

/// One open day: its counters and latest call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct OpenDay {
    pub tally: Tally,
    pub last_used: Option<DateTime<Utc>>,
}

/// The attribute that marks a key's parked entries of `day` folded into its day item: `p#<day>`, the
/// instant before which they were parked (CONTRACTS.md §2).
pub(super) fn fold_attribute(day: Day) -> String {
    format!("p#{day}")
}

/// The folds a key item holds: per day, the instant before which its parked entries of that day are
/// folded into the day item (readers leave them out).
pub(super) fn folds(item: &Item) -> Result<BTreeMap<Day, DateTime<Utc>>, StoreError> {
    let mut folds = BTreeMap::new();
    for (name, value) in item {
        let Some(day) = name.strip_prefix("p#") else { continue };
        let Ok(day) = day.parse::<Day>() else { continue };
        let bad = || corrupt(format!("{name} is not a timestamp"));
        let text = value.as_s().map_err(|_| bad())?;
        folds.insert(day, parse_instant(text).map_err(|_| bad())?);
    }
    Ok(folds)
}

/// The open days a key item holds, by day.
pub(super) fn open_days(item: &Item) -> Result<BTreeMap<Day, OpenDay>, StoreError> {
    let mut days: BTreeMap<Day, OpenDay> = BTreeMap::new();
    for (name, value) in item {
        let Some((kind, day)) = name.split_once('#') else { continue };
        if !matches!(kind, "s" | "f" | "u" | "t") {
            continue;
        }
        let Ok(day) = day.parse::<Day>() else { continue };
        let open = days.entry(day).or_default();
        let number = || -> Result<u64, StoreError> {
            value
                .as_n()
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| corrupt(format!("open day counter {name} is not a count: {value:?}")))
        };
        match kind {
            "s" => open.tally.successful_calls = number()?,
            "f" => open.tally.failed_calls = number()?,
            "u" => open.tally.usage_count = number()?,
            "t" => {
                let text = value.as_s().map_err(|_| corrupt(format!("{name} is not a timestamp")))?;
                open.last_used =
                    Some(parse_instant(text).map_err(|_| corrupt(format!("{name} is not a timestamp")))?);
            }
            _ => {}
        }
    }
    Ok(days)
}

/// A key's days: its day items with its open days in `from..=to` added in, sorted by day.
pub(super) fn with_open(
    key_id: &KeyId,
    items: Vec<DayUsage>,
    open: &BTreeMap<Day, OpenDay>,
    from: Day,
    to: Day,
) -> Vec<DayUsage> {
    let mut merged: BTreeMap<Day, DayUsage> = items.into_iter().map(|item| (item.day, item)).collect();
    for (day, open_day) in open.range(from..=to) {
        let usage = merged.entry(*day).or_insert_with(|| DayUsage::empty(key_id.clone(), *day));
        usage.tally.add(open_day.tally);
        usage.open.add(open_day.tally);
        usage.last_used = usage.last_used.max(open_day.last_used);
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;

    #[test]
    fn open_days_are_read_from_their_attributes_and_other_attributes_are_left_alone() {
        let item: Item = [
            ("id", AttributeValue::S("aaaaaaaaaaaa".into())),
            ("usageCount", AttributeValue::N("9".into())),
            ("s#2026-12-07", AttributeValue::N("3".into())),
            ("u#2026-12-07", AttributeValue::N("4".into())),
            ("t#2026-12-07", AttributeValue::S("2026-12-07T10:00:00.000Z".into())),
            ("u#2026-12-06", AttributeValue::N("1".into())),
            // A fold is not an open day.
            ("p#2026-12-05", AttributeValue::S("2026-12-07T06:30:00.000Z".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let days = open_days(&item).unwrap();
        let today: Day = "2026-12-07".parse().unwrap();
        assert_eq!(days.len(), 2);
        let folds = folds(&item).unwrap();
        assert_eq!(folds.len(), 1);
        assert_eq!(
            folds[&"2026-12-05".parse::<Day>().unwrap()],
            parse_instant("2026-12-07T06:30:00Z").unwrap()
        );
        assert_eq!(days[&today].tally, Tally { successful_calls: 3, failed_calls: 0, usage_count: 4 });
        assert_eq!(days[&today].last_used, Some(parse_instant("2026-12-07T10:00:00Z").unwrap()));

        let key = KeyId::parse("aaaaaaaaaaaa").unwrap();
        let merged = with_open(&key, Vec::new(), &days, today, today);
        assert_eq!(
            (merged.len(), merged[0].tally, merged[0].open),
            (1, days[&today].tally, days[&today].tally)
        );
    }

    #[test]
    fn a_damaged_open_counter_is_an_error_that_names_it() {
        let item: Item =
            [("u#2026-12-07".to_owned(), AttributeValue::S("four".into()))].into_iter().collect();
        let err = open_days(&item).unwrap_err().to_string();
        assert!(err.contains("u#2026-12-07"), "{err}");
    }
}
