//! Reading and correcting the day items: a key's usage (its parked entries added), the reconcile
//! run's corrections and key totals, and the run records.

use chrono::{DateTime, Utc};
use meter_model::batch::with_parked;
use meter_model::time::{format_instant, parse_instant};
use meter_model::{
    CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayUsage, KeyId, Month, ParkedRefresh,
    ParkedUsage, ReconcileRun, RunLease, StoreError, UsageReader, UsageTotals,
};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use super::error::{corrupt, instant, sql_error};
use super::item::{DAY_COLUMNS, day_usage_of, delta_params, read_day_row, tally_of, tally_params};

impl UsageReader for SqliteStore {
    async fn month_usage(&self, key_id: &KeyId, month: Month) -> Result<Vec<DayUsage>, StoreError> {
        self.key_usage(key_id, month.first_day(), month.last_day())
    }

    async fn lifetime_usage(&self, key_id: &KeyId) -> Result<Vec<DayUsage>, StoreError> {
        self.key_usage(key_id, Day::EARLIEST, Day::LATEST)
    }
}

impl SqliteStore {
    /// A key's day items in `from..=to` with its parked usage added in.
    fn key_usage(&self, key_id: &KeyId, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let parked = self.parked_of(Some(key_id), from, to, None)?;
        Ok(with_parked(self.key_items(key_id, from, to)?, &parked.entries))
    }

    /// A key's day items in `from..=to`, ordered by day.
    fn key_items(&self, key_id: &KeyId, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let op = |e| sql_error("read a key's day items", e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DAY_COLUMNS} FROM usage_counters WHERE key_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day"
            ))
            .map_err(op)?;
        let rows = stmt
            .query_map(params![key_id.as_str(), from.to_string(), to.to_string()], read_day_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(op)?;
        rows.into_iter().map(day_usage_of).collect()
    }
}

impl CounterCorrector for SqliteStore {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DAY_COLUMNS} FROM usage_counters WHERE day >= ?1 AND day <= ?2 ORDER BY key_id, day"
            ))
            .map_err(|e| sql_error("read day items", e))?;
        let rows = stmt
            .query_map(params![from.to_string(), to.to_string()], read_day_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| sql_error("read day items", e))?;
        rows.into_iter().map(day_usage_of).collect()
    }

    async fn day_item(&self, key_id: &KeyId, day: Day) -> Result<Option<DayUsage>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {DAY_COLUMNS} FROM usage_counters WHERE key_id = ?1 AND day = ?2"),
                params![key_id.as_str(), day.to_string()],
                read_day_row,
            )
            .optional()
            .map_err(|e| sql_error("read day item", e))?;
        row.map(day_usage_of).transpose()
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        let op = |e| sql_error("correct day", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        let key = correction.key_id.as_str();
        let day = correction.day.to_string();
        if tx
            .query_row("SELECT 1 FROM api_keys WHERE id = ?1", [key], |_| Ok(()))
            .optional()
            .map_err(op)?
            .is_none()
        {
            return Ok(CorrectionOutcome::UnknownKey);
        }
        let current = tx
            .query_row(
                "SELECT successful_calls, failed_calls, usage_count, open_successful_calls, open_failed_calls, \
                 open_usage_count FROM usage_counters WHERE key_id = ?1 AND day = ?2",
                params![key, day],
                |r| {
                    Ok((
                        [r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?],
                        [r.get::<_, i64>(3)?, r.get::<_, i64>(4)?, r.get::<_, i64>(5)?],
                    ))
                },
            )
            .optional()
            .map_err(op)?;
        let expected = match correction.expected {
            Some(tally) => Some((tally_params(tally)?, tally_params(correction.expected_open)?)),
            None => None,
        };
        if current != expected {
            return Ok(CorrectionOutcome::Changed);
        }
        let [s, f, u] = tally_params(correction.target)?;
        tx.execute(
            "INSERT INTO usage_counters \
             (key_id, day, successful_calls, failed_calls, usage_count, reconciled_at, last_used) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key_id, day) DO UPDATE SET \
             successful_calls = excluded.successful_calls, failed_calls = excluded.failed_calls, \
             usage_count = excluded.usage_count, reconciled_at = excluded.reconciled_at, \
             open_successful_calls = 0, open_failed_calls = 0, open_usage_count = 0, \
             last_used = COALESCE(excluded.last_used, usage_counters.last_used)",
            params![
                key,
                day,
                s,
                f,
                u,
                format_instant(correction.at),
                correction.last_used.map(format_instant)
            ],
        )
        .map_err(op)?;
        // The key's totals move by what the item moved (CONTRACTS.md §2), in the same transaction.
        let [ds, df, du] = delta_params(correction.delta())?;
        tx.execute(
            "UPDATE api_keys SET successful_calls = MAX(0, successful_calls + ?2), \
             failed_calls = MAX(0, failed_calls + ?3), usage_count = MAX(0, usage_count + ?4), \
             last_used = CASE WHEN ?5 IS NULL THEN last_used ELSE MAX(COALESCE(last_used, ''), ?5) END \
             WHERE id = ?1",
            params![key, ds, df, du, correction.last_used.map(format_instant)],
        )
        .map_err(op)?;
        if let Some(until) = correction.folded_until {
            SqliteStore::fold_parked(&tx, key, &day, until)?;
        }
        tx.commit().map_err(op)?;
        Ok(CorrectionOutcome::Applied)
    }

    async fn refresh_key_totals(&self, key_id: &KeyId) -> Result<Option<UsageTotals>, StoreError> {
        let op = |e| sql_error("recount key totals", e);
        let row = self
            .conn()
            .query_row(
                "UPDATE api_keys SET (successful_calls, failed_calls, usage_count, last_used) = \
                 (SELECT COALESCE(SUM(s), 0), COALESCE(SUM(f), 0), COALESCE(SUM(u), 0), MAX(t) FROM ( \
                 SELECT successful_calls AS s, failed_calls AS f, usage_count AS u, last_used AS t \
                 FROM usage_counters WHERE key_id = ?1 \
                 UNION ALL SELECT parked_successful_calls, parked_failed_calls, parked_usage_count, last_used \
                 FROM api_keys WHERE id = ?1 \
                 UNION ALL SELECT imported_successful_calls, imported_failed_calls, imported_usage_count, \
                 imported_last_used FROM api_keys WHERE id = ?1)) \
                 WHERE id = ?1 RETURNING successful_calls, failed_calls, usage_count, last_used",
                [key_id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(op)?;
        row.map(|(s, f, u, last_used)| {
            Ok(UsageTotals { tally: tally_of(s, f, u)?, last_used: instant(last_used, "lastUsed")? })
        })
        .transpose()
    }

    async fn refresh_parked_totals(&self) -> Result<ParkedRefresh, StoreError> {
        let op = |e| sql_error("refresh parked usage in the key totals", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        let mut refresh = ParkedRefresh::default();
        let count = |sql: &str| tx.query_row(sql, [], |r| r.get::<_, i64>(0)).map(i64::unsigned_abs);
        refresh.parked_items = count("SELECT COUNT(*) FROM parked_items").map_err(op)?;
        refresh.parked_entries = count("SELECT COALESCE(SUM(entries), 0) FROM parked_totals").map_err(op)?;
        refresh.keys_scanned = count("SELECT COUNT(*) FROM api_keys").map_err(op)?;
        // Every key whose snapshot or parked usage is not zero, the two side by side.
        // Per key: id, snapshot, parked usage now, its latest call.
        type Row = (String, [i64; 3], [i64; 3], Option<String>);
        let rows: Vec<Row> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT k.id, k.parked_successful_calls, k.parked_failed_calls, k.parked_usage_count, \
                     COALESCE(p.successful_calls, 0), COALESCE(p.failed_calls, 0), COALESCE(p.usage_count, 0), \
                     p.last_used FROM api_keys k LEFT JOIN parked_totals p ON p.key_id = k.id \
                     WHERE p.key_id IS NOT NULL OR k.parked_usage_count > 0 \
                     OR k.parked_successful_calls > 0 OR k.parked_failed_calls > 0",
                )
                .map_err(op)?;
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    [r.get(1)?, r.get(2)?, r.get(3)?],
                    [r.get(4)?, r.get(5)?, r.get(6)?],
                    r.get(7)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(op)?
        };
        {
            let mut set = tx
                .prepare_cached(
                    "UPDATE api_keys SET successful_calls = MAX(0, successful_calls + ?2 - parked_successful_calls), \
                     failed_calls = MAX(0, failed_calls + ?3 - parked_failed_calls), \
                     usage_count = MAX(0, usage_count + ?4 - parked_usage_count), \
                     parked_successful_calls = ?2, parked_failed_calls = ?3, parked_usage_count = ?4, \
                     last_used = CASE WHEN ?5 IS NULL THEN last_used ELSE MAX(COALESCE(last_used, ''), ?5) END \
                     WHERE id = ?1",
                )
                .map_err(op)?;
            for (key, snapshot, now, latest) in rows {
                if now[2] > 0 {
                    refresh.keys_parked += 1;
                }
                if snapshot != now {
                    set.execute(params![key, now[0], now[1], now[2], latest]).map_err(op)?;
                    refresh.keys_moved += 1;
                }
            }
        }
        tx.commit().map_err(op)?;
        Ok(refresh)
    }

    async fn parked_usage_until(
        &self,
        from: Day,
        to: Day,
        until: Option<DateTime<Utc>>,
    ) -> Result<ParkedUsage, StoreError> {
        self.parked_of(None, from, to, until)
    }

    async fn clear_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        self.delete_parked(handles)
    }

    async fn claim_reconcile_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<RunLease>, StoreError> {
        let op = |e| sql_error("claim the reconcile lease", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        let held: Option<(String, String)> = tx
            .query_row("SELECT holder, until FROM run_leases WHERE name = 'reconcile'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(op)?;
        if let Some((other, other_until)) = held {
            let other_until = parse_instant(&other_until).map_err(|_| {
                corrupt(format!("the reconcile lease's until {other_until:?} is not a timestamp"))
            })?;
            if other != holder && other_until > now {
                return Ok(Some(RunLease { holder: other, until: other_until }));
            }
        }
        tx.execute(
            "INSERT INTO run_leases (name, holder, until) VALUES ('reconcile', ?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until",
            params![holder, format_instant(until)],
        )
        .map_err(op)?;
        tx.commit().map_err(op)?;
        Ok(None)
    }

    async fn release_reconcile_lease(&self, holder: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM run_leases WHERE name = 'reconcile' AND holder = ?1", [holder])
            .map_err(|e| sql_error("release the reconcile lease", e))?;
        Ok(())
    }

    async fn record_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        let record = serde_json::to_string(run)
            .map_err(|e| StoreError::Other { operation: "record run".into(), source: e.into() })?;
        self.conn()
            .execute(
                "INSERT INTO reconcile_runs (run_id, started_at, record) VALUES (?1, ?2, ?3)",
                params![run.run_id, format_instant(run.started_at), record],
            )
            .map_err(|e| sql_error("record run", e))?;
        Ok(())
    }
}
