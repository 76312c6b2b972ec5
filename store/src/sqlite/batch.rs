//! The realtime path's buffers of deliveries: each delivery marked once, then its usage merged per
//! key and day (single calls parked), in one transaction.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use chrono::{DateTime, Utc};
use meter_model::batch::{MARKER_TTL, MarkerSlot, buffer_digest, capacity, merge_days, split_parked};
use meter_model::time::format_instant;
use meter_model::{ApplyReport, BatchDelta, StoreError, Tally, UsageWriter};
use rusqlite::{TransactionBehavior, params};

use super::SqliteStore;
use super::error::sql_error;
use super::item::tally_params;

impl UsageWriter for SqliteStore {
    async fn apply_deliveries(
        &self,
        deliveries: &[BatchDelta],
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let op = |e| sql_error("apply deliveries", e);
        let mut conn = self.conn();
        // One transaction holds the buffer and its markers: it all happens once, or not at all.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        let now = format_instant(applied_at);
        let expires = format_instant(applied_at + MARKER_TTL);
        tx.execute("DELETE FROM delivery_marks WHERE expires_at < ?1", [&now]).map_err(op)?;
        let mut report = ApplyReport::default();
        let mut slots: BTreeMap<MarkerSlot, Vec<&BatchDelta>> = BTreeMap::new();
        for delivery in deliveries {
            slots.entry(delivery.slot()).or_default().push(delivery);
        }
        let mut fresh: Vec<&BatchDelta> = Vec::new();
        {
            let mut held =
                tx.prepare_cached("SELECT COUNT(*) FROM delivery_marks WHERE slot = ?1").map_err(op)?;
            let mut mark = tx
                .prepare_cached(
                    "INSERT INTO delivery_marks (slot, digest, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )
                .map_err(op)?;
            for (slot, members) in &slots {
                let name = slot.name();
                let before: i64 = held.query_row([&name], |r| r.get(0)).map_err(op)?;
                let mut added = 0;
                for delivery in members {
                    // The digest's 64 bits, stored as SQLite's signed integer.
                    let digest = i64::from_ne_bytes(delivery.batch_id().short_digest().to_ne_bytes());
                    if mark.execute(params![name, digest, expires]).map_err(op)? == 1 {
                        added += 1;
                        fresh.push(delivery);
                    } else {
                        report.deliveries_already_applied += 1;
                    }
                }
                report.marker_writes += 1;
                report.marker_write_units +=
                    capacity::marker_write_units(usize::try_from(before).unwrap_or(0), added);
            }
        }
        report.deliveries_applied = fresh.len();
        let days = merge_days(fresh.iter().copied());
        {
            let mut known = self.known_keys.lock().unwrap_or_else(PoisonError::into_inner);
            let mut key_exists = tx.prepare_cached("SELECT 1 FROM api_keys WHERE id = ?1").map_err(op)?;
            // A day's usage is open until reconcile sets the day (CONTRACTS.md §2).
            let mut add_to_day = tx
                .prepare_cached(
                    "INSERT INTO usage_counters (key_id, day, successful_calls, failed_calls, usage_count, \
                     open_successful_calls, open_failed_calls, open_usage_count, last_used) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?4, ?5, ?6) ON CONFLICT (key_id, day) DO UPDATE SET \
                     successful_calls = successful_calls + excluded.successful_calls, \
                     failed_calls = failed_calls + excluded.failed_calls, \
                     usage_count = usage_count + excluded.usage_count, \
                     open_successful_calls = open_successful_calls + excluded.successful_calls, \
                     open_failed_calls = open_failed_calls + excluded.failed_calls, \
                     open_usage_count = open_usage_count + excluded.usage_count, \
                     last_used = MAX(COALESCE(last_used, ''), excluded.last_used)",
                )
                .map_err(op)?;
            let mut existing = Vec::with_capacity(days.len());
            for group in days.chunk_by(|a, b| a.key_id == b.key_id) {
                let key_id = &group[0].key_id;
                if !known.contains(key_id) {
                    report.keys_read += 1;
                    if key_exists.exists([key_id.as_str()]).map_err(op)? {
                        known.insert(key_id.clone());
                    } else {
                        report.unknown_keys.insert(key_id.clone(), group.iter().map(|d| d.tally).sum());
                        continue;
                    }
                }
                existing.extend(group.iter().cloned());
            }
            let (hot, parked) = split_parked(existing);
            for day in &hot {
                let (key, day_text, at) =
                    (day.key_id.as_str(), day.day.to_string(), format_instant(day.last_used));
                let [s, f, u] = tally_params(day.tally)?;
                add_to_day.execute(params![key, day_text, s, f, u, at]).map_err(op)?;
                report.key_days_written += 1;
            }
            // On DynamoDB the key's open days and lifetime totals are one write per key (CONTRACTS.md
            // §2): counted so, and the totals moved in the same transaction here.
            let mut key_later =
                tx.prepare_cached("SELECT 1 FROM api_keys WHERE id = ?1 AND last_used >= ?2").map_err(op)?;
            let mut add_to_key = tx
                .prepare_cached(
                    "UPDATE api_keys SET successful_calls = successful_calls + ?2, \
                     failed_calls = failed_calls + ?3, usage_count = usage_count + ?4, \
                     last_used = MAX(COALESCE(last_used, ''), ?5) WHERE id = ?1",
                )
                .map_err(op)?;
            for key_days in hot.chunk_by(|a, b| a.key_id == b.key_id) {
                let key = key_days[0].key_id.as_str();
                let tally: Tally = key_days.iter().map(|d| d.tally).sum();
                let at = format_instant(key_days.iter().map(|d| d.last_used).max().unwrap_or_default());
                if key_later.exists(params![key, at]).map_err(op)? {
                    report.key_last_used_rewrites += 1;
                }
                let [s, f, u] = tally_params(tally)?;
                add_to_key.execute(params![key, s, f, u, at]).map_err(op)?;
                report.key_writes += 1;
            }
            let mut park = tx
                .prepare_cached(
                    "INSERT INTO parked_usage (item, key_id, day, successful_calls, failed_calls, usage_count, last_used, \
                     parked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(op)?;
            let mut add_to_totals = tx
                .prepare_cached(
                    "INSERT INTO parked_totals (key_id, successful_calls, failed_calls, usage_count, last_used, entries) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 1) ON CONFLICT (key_id) DO UPDATE SET \
                     successful_calls = successful_calls + excluded.successful_calls, \
                     failed_calls = failed_calls + excluded.failed_calls, \
                     usage_count = usage_count + excluded.usage_count, \
                     last_used = MAX(last_used, excluded.last_used), entries = entries + 1",
                )
                .map_err(op)?;
            let mut add_item = tx
                .prepare_cached("INSERT INTO parked_items (item) VALUES (?1) ON CONFLICT DO NOTHING")
                .map_err(op)?;
            // Rows of one bucket, day and buffer make one parked item, as in DynamoDB.
            let buffer = buffer_digest(&fresh);
            for ((bucket, day), entries) in &parked {
                let item = format!("{bucket:02}|{day}|{buffer:016x}");
                add_item.execute([&item]).map_err(op)?;
                for entry in entries {
                    let [s, f, u] = tally_params(entry.tally)?;
                    let at = format_instant(entry.last_used);
                    park.execute(params![
                        item,
                        entry.key_id.as_str(),
                        entry.day.to_string(),
                        s,
                        f,
                        u,
                        at,
                        now
                    ])
                    .map_err(op)?;
                    add_to_totals.execute(params![entry.key_id.as_str(), s, f, u, at]).map_err(op)?;
                }
                report.count_parked_item(entries.len());
            }
            if super::quota::any_quota(&tx)? {
                let parked_days = parked.values().flatten();
                super::quota::settle(&tx, hot.iter().chain(parked_days), applied_at, &mut report)?;
            }
        }
        tx.commit().map_err(op)?;
        Ok(report)
    }
}
