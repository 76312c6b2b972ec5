//! Parked usage: single calls of a buffer gathered per bucket and day (CONTRACTS.md §2), read with a
//! key's day items and deleted once reconcile has folded them.

use chrono::{DateTime, Utc};
use meter_model::batch::ParkedAggregate;
use meter_model::time::{format_instant, parse_instant};
use meter_model::{Day, DayDelta, KeyId, ParkedUsage, StoreError};
use rusqlite::{TransactionBehavior, params};

use super::SqliteStore;
use super::error::{corrupt, sql_error};
use super::item::tally_of;

// One statement per shape: with `(?3 IS NULL OR key_id = ?3)` in one, SQLite plans for the range of
// days and reads every key's rows of those days to find one key's (a reconcile's corrections then cost
// keys × the day's parked rows).
const PARKED_OF_KEY: &str = "SELECT item, key_id, day, successful_calls, failed_calls, usage_count, last_used \
     FROM parked_usage WHERE key_id = ?3 AND day >= ?1 AND day <= ?2 \
     AND (?4 IS NULL OR parked_at IS NULL OR parked_at <= ?4) ORDER BY id";
const PARKED_OF_EVERY_KEY: &str = "SELECT item, key_id, day, successful_calls, failed_calls, usage_count, \
     last_used FROM parked_usage WHERE day >= ?1 AND day <= ?2 AND ?3 IS NULL \
     AND (?4 IS NULL OR parked_at IS NULL OR parked_at <= ?4) ORDER BY id";

impl SqliteStore {
    /// Parked usage of one key (or every key) in `from..=to`, parked at or before `until` (all,
    /// without); the handles are the parked items.
    pub(super) fn parked_of(
        &self,
        key_id: Option<&KeyId>,
        from: Day,
        to: Day,
        until: Option<DateTime<Utc>>,
    ) -> Result<ParkedUsage, StoreError> {
        let op = |e| sql_error("read parked usage", e);
        let conn = self.conn();
        let sql = if key_id.is_some() { PARKED_OF_KEY } else { PARKED_OF_EVERY_KEY };
        let mut stmt = conn.prepare_cached(sql).map_err(op)?;
        let until = until.map(format_instant);
        let mut rows = stmt
            .query(params![from.to_string(), to.to_string(), key_id.map(KeyId::as_str), until])
            .map_err(op)?;
        // Summed per key and day as the rows stream by: memory follows the distinct key days.
        let mut parked = ParkedAggregate::default();
        let mut items = std::collections::HashSet::new();
        while let Some(row) = rows.next().map_err(op)? {
            let item: String = row.get(0).map_err(op)?;
            if !items.contains(&item) {
                items.insert(item.clone());
                parked.add_handle(item);
            }
            let key: String = row.get(1).map_err(op)?;
            let day: String = row.get(2).map_err(op)?;
            let last_used: String = row.get(6).map_err(op)?;
            parked.add_entry(DayDelta {
                key_id: KeyId::parse(&key).map_err(|e| corrupt(e.to_string()))?,
                day: day.parse().map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?,
                tally: tally_of(row.get(3).map_err(op)?, row.get(4).map_err(op)?, row.get(5).map_err(op)?)?,
                last_used: parse_instant(&last_used).map_err(|e| corrupt(e.to_string()))?,
            });
        }
        Ok(parked.finish())
    }

    /// Folds a key's parked rows of `day` parked at or before `until` into its day item, inside the
    /// correction's transaction `tx`: they leave the parked rows and the key's parked sum at once.
    /// (Items left with no row leave the parked items when the run clears: one sweep, not a
    /// statement per item on every correction.)
    pub(super) fn fold_parked(
        tx: &rusqlite::Transaction<'_>,
        key_id: &str,
        day: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        macro_rules! folded {
            () => {
                "key_id = ?1 AND day = ?2 AND (parked_at IS NULL OR parked_at <= ?3)"
            };
        }
        let op = |e| sql_error("fold parked usage", e);
        let folding = params![key_id, day, format_instant(until)];
        tx.prepare_cached(concat!(
            "UPDATE parked_totals SET successful_calls = parked_totals.successful_calls - d.s, \
             failed_calls = parked_totals.failed_calls - d.f, usage_count = parked_totals.usage_count - d.u, \
             entries = parked_totals.entries - d.n \
             FROM (SELECT SUM(successful_calls) AS s, SUM(failed_calls) AS f, SUM(usage_count) AS u, \
             COUNT(*) AS n FROM parked_usage WHERE ",
            folded!(),
            ") AS d WHERE parked_totals.key_id = ?1 AND d.n > 0"
        ))
        .and_then(|mut subtract| subtract.execute(folding))
        .map_err(op)?;
        tx.prepare_cached(concat!("DELETE FROM parked_usage WHERE ", folded!()))
            .and_then(|mut delete| delete.execute(folding))
            .map_err(op)?;
        tx.prepare_cached("DELETE FROM parked_totals WHERE key_id = ?1 AND entries <= 0")
            .and_then(|mut forget| forget.execute([key_id]))
            .map_err(op)?;
        Ok(())
    }

    /// Deletes the parked items `handles` names, in one transaction.
    pub(super) fn delete_parked(&self, handles: &[String]) -> Result<(), StoreError> {
        let op = |e| sql_error("clear parked usage", e);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(op)?;
        {
            // The item's entries leave their keys' parked sums (the latest call stays: it happened).
            let mut subtract = tx
                .prepare_cached(
                    "UPDATE parked_totals SET successful_calls = parked_totals.successful_calls - d.s, \
                     failed_calls = parked_totals.failed_calls - d.f, usage_count = parked_totals.usage_count - d.u, \
                     entries = parked_totals.entries - d.n \
                     FROM (SELECT key_id, SUM(successful_calls) AS s, SUM(failed_calls) AS f, \
                     SUM(usage_count) AS u, COUNT(*) AS n FROM parked_usage WHERE item = ?1 GROUP BY key_id) AS d \
                     WHERE parked_totals.key_id = d.key_id",
                )
                .map_err(op)?;
            let mut delete = tx.prepare_cached("DELETE FROM parked_usage WHERE item = ?1").map_err(op)?;
            let mut forget = tx.prepare_cached("DELETE FROM parked_items WHERE item = ?1").map_err(op)?;
            for handle in handles {
                subtract.execute([handle]).map_err(op)?;
                delete.execute([handle]).map_err(op)?;
                forget.execute([handle]).map_err(op)?;
            }
            tx.execute("DELETE FROM parked_totals WHERE entries <= 0", []).map_err(op)?;
            // Items whose rows the corrections folded away (SQLite folds in each correction).
            tx.execute(
                "DELETE FROM parked_items WHERE NOT EXISTS \
                 (SELECT 1 FROM parked_usage WHERE parked_usage.item = parked_items.item)",
                [],
            )
            .map_err(op)?;
        }
        tx.commit().map_err(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_keys_parked_usage_is_read_through_the_key_index_not_the_days_rows() {
        let store = SqliteStore::open_in_memory().unwrap();
        let plan: Vec<String> = {
            let conn = store.conn();
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {PARKED_OF_KEY}")).unwrap();
            stmt.query_map(params!["2026-11-01", "2026-11-30", "k", None::<String>], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX parked_usage_key (key_id=?")),
            "plan: {plan:?}"
        );
    }
}
