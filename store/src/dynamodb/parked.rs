//! Parked usage: a buffer's key days with a single call, kept together in a few items per bucket of
//! keys (`#parked#<bucket>`, sort key `<day>#<digest of the buffer>`) instead of an item write each.
//! Readers add them in; reconcile clears them once the day items hold the authoritative counts.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use meter_model::{Day, DayDelta, KeyId, ParkedUsage, StoreError, Tally};

use super::error::{store_error, table_missing};
use super::item::{corrupt, n, req_s, s};
use super::{DynamoStore, TTL_ATTRIBUTE, UNPROCESSED_RETRY, pause_for_unprocessed};

/// Partition prefix of parked usage in `UsageCounters`; `#` cannot start a key id.
const PARKED_PARTITION_PREFIX: &str = "#parked#";

/// How long a parked item outlives its writing when no reconcile clears it: longer than any
/// reconcile range, so that only a deployment without its nightly job ever loses one from the
/// realtime view (the archive keeps the calls).
const PARKED_TTL: chrono::Duration = chrono::Duration::days(40);

/// `DynamoDB`'s limit on the requests of one `BatchWriteItem`.
const MAX_BATCH_WRITE: usize = 25;

fn partition(bucket: u64) -> String {
    format!("{PARKED_PARTITION_PREFIX}{bucket:02}")
}

/// One entry a line: `key id, successful, failed, calls, lastUsed`, tab-separated.
fn encode(entries: &[DayDelta]) -> String {
    let mut text = String::with_capacity(entries.len() * 48);
    for e in entries {
        let t = e.tally;
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            e.key_id,
            t.successful_calls,
            t.failed_calls,
            t.usage_count,
            format_instant(e.last_used)
        ));
    }
    text
}

fn decode(day: Day, text: &str) -> Result<Vec<DayDelta>, StoreError> {
    text.lines()
        .map(|line| {
            let bad = || {
                corrupt(format!("parked entry {line:?} is not `key, successful, failed, calls, lastUsed`"))
            };
            let fields: Vec<&str> = line.split('\t').collect();
            let [key, s, f, u, at] = fields.as_slice() else { return Err(bad()) };
            let count = |v: &str| v.parse::<u64>().map_err(|_| bad());
            Ok(DayDelta {
                key_id: KeyId::parse(key).map_err(|_| bad())?,
                day,
                tally: Tally { successful_calls: count(s)?, failed_calls: count(f)?, usage_count: count(u)? },
                last_used: meter_model::time::parse_instant(at).map_err(|_| bad())?,
            })
        })
        .collect()
}

impl DynamoStore {
    /// Writes one parked item: `entries` of one bucket and day, named by `digest` (of the buffer's
    /// deliveries), so a repeated write of the same buffer writes the same item.
    pub(super) async fn park(
        &self,
        bucket: u64,
        day: Day,
        digest: u64,
        entries: &[DayDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(&partition(bucket)))
            .item("day", s(&format!("{day}#{digest:016x}")))
            .item("entries", s(&encode(entries)))
            .item(TTL_ATTRIBUTE, n((applied_at + PARKED_TTL).timestamp().unsigned_abs()))
            .send()
            .await
            .map_err(|e| table_missing(store_error("park usage", e), &self.tables.usage_counters))?;
        Ok(())
    }

    /// The parked usage of one bucket in `from..=to`, read consistently; handles are `partition|sort key`.
    pub(super) async fn parked_in_bucket(
        &self,
        bucket: u64,
        from: Day,
        to: Day,
    ) -> Result<ParkedUsage, StoreError> {
        // `$` sorts right after `#`: every sort key of the last day.
        let mut items = self
            .sort_key_range(&partition(bucket), &from.to_string(), &format!("{to}$"))
            .into_paginator()
            .items()
            .send();
        let mut parked = ParkedUsage::default();
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| {
                table_missing(store_error("read parked usage", e), &self.tables.usage_counters)
            })?;
            let sort_key = req_s(&item, "day")?;
            let day: Day = sort_key
                .split('#')
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?;
            parked.entries.extend(decode(day, req_s(&item, "entries")?)?);
            parked.handles.push(format!("{}|{sort_key}", partition(bucket)));
        }
        Ok(parked)
    }

    /// Deletes parked items by handle, 25 to a `BatchWriteItem`, asking again for what DynamoDB leaves
    /// unprocessed.
    pub(super) async fn delete_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        for group in handles.chunks(MAX_BATCH_WRITE) {
            let mut requests = Vec::with_capacity(group.len());
            for handle in group {
                let (pk, sk) = handle
                    .split_once('|')
                    .ok_or_else(|| corrupt(format!("{handle:?} is not a parked item")))?;
                let key = HashMap::from([("keyId".to_owned(), s(pk)), ("day".to_owned(), s(sk))]);
                let delete = DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map_err(|e| super::error::build_error("clear parked usage", e))?;
                requests.push(WriteRequest::builder().delete_request(delete).build());
            }
            let mut pauses = UNPROCESSED_RETRY.pauses();
            loop {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.tables.usage_counters, requests)
                    .send()
                    .await
                    .map_err(|e| {
                        table_missing(store_error("clear parked usage", e), &self.tables.usage_counters)
                    })?;
                match out.unprocessed_items.and_then(|mut u| u.remove(&self.tables.usage_counters)) {
                    Some(rest) if !rest.is_empty() => {
                        pause_for_unprocessed(&mut pauses, "clear parked usage").await?;
                        requests = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_named() {
        let day: Day = "2026-11-30".parse().unwrap();
        let entries = vec![DayDelta {
            key_id: KeyId::parse("0123456789ab").unwrap(),
            day,
            tally: Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 },
            last_used: meter_model::time::parse_instant("2026-11-30T10:00:00.123Z").unwrap(),
        }];
        assert_eq!(decode(day, &encode(&entries)).unwrap(), entries);
        let err = decode(day, "0123456789ab\tone\t0\t1\t2026-11-30T10:00:00Z").unwrap_err();
        assert!(err.to_string().contains("not `key, successful"), "{err}");
    }
}
