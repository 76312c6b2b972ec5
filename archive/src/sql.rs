//! The rollup on a distributed engine (Athena): the SQL of `notebooks/sql/rollup.sql`, the very text
//! deployed as a named query and parity-tested against [`crate::rollup`] on DuckDB, run through the
//! [`QueryEngine`] port. For archives whose days outgrow one machine.

use meter_model::{Day, QueryEngine, QueryRows, Tally};

use crate::output::ROLLUP_COLUMNS;
use crate::read::Rollup;
use crate::rollup::{RollupError, RollupRow, RollupStats, sort_by_day_and_key};

/// The rollup in Athena's dialect: distinct requests per key and UTC day (CONTRACTS.md §4, §6).
pub const ROLLUP_SQL: &str = include_str!("../../notebooks/sql/rollup.sql");

/// The four execution parameters of the range queries of `notebooks/sql/`: the first and last folder
/// read as `yyyymmdd` numbers (a day either side of the range) and the first and last day as literals.
#[must_use]
pub fn range_parameters(from: Day, to: Day) -> Vec<String> {
    let folder = |day: Day| day.date().format("%Y%m%d").to_string();
    vec![folder(from.pred()), folder(to.succ()), format!("'{from}'"), format!("'{to}'")]
}

/// The rollups of `from..=to` computed by `engine` over the archive's table, sorted by day then key.
pub async fn rollup_on<Q: QueryEngine>(engine: &Q, from: Day, to: Day) -> Result<Rollup, RollupError> {
    let answer = engine.run(ROLLUP_SQL, &range_parameters(from, to)).await.map_err(|source| {
        RollupError::Source { context: format!("running the rollup query for {from}..{to}"), source }
    })?;
    let mut rows = rows_of(&answer, from, to)?;
    sort_by_day_and_key(&mut rows);
    let distinct = rows.iter().map(|r| r.tally.usage_count).sum();
    let stats = RollupStats { bytes: answer.scanned_bytes.unwrap_or(0), distinct, ..RollupStats::default() };
    Ok(Rollup { rows, stats, misplaced: Vec::new() })
}

fn rows_of(answer: &QueryRows, from: Day, to: Day) -> Result<Vec<RollupRow>, RollupError> {
    let problem = |problem: String| RollupError::Schema { file: "the rollup query's result".into(), problem };
    let expected = ROLLUP_COLUMNS;
    if answer.columns != expected {
        return Err(problem(format!("has columns {:?} where {expected:?} are expected", answer.columns)));
    }
    answer
        .rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let line = index + 2; // the header is line 1
            let [key_id, day, successful, failed, usage] = row.as_slice() else {
                return Err(problem(format!("line {line} has {} fields", row.len())));
            };
            let count = |name: &str, text: &String| {
                text.parse::<u64>()
                    .map_err(|_| problem(format!("line {line}: {name} {text:?} is not a count")))
            };
            let day: Day =
                day.parse().map_err(|_| problem(format!("line {line}: day {day:?} is not a day")))?;
            if day < from || day > to {
                return Err(problem(format!("line {line}: day {day} is outside {from}..{to}")));
            }
            let tally = Tally {
                successful_calls: count(expected[2], successful)?,
                failed_calls: count(expected[3], failed)?,
                usage_count: count(expected[4], usage)?,
            };
            Ok(RollupRow { key_id: key_id.clone(), day, tally })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Day {
        text.parse().unwrap()
    }

    struct Canned(QueryRows);

    impl QueryEngine for Canned {
        async fn run(&self, sql: &str, parameters: &[String]) -> Result<QueryRows, meter_model::StoreError> {
            assert_eq!(sql.matches('?').count(), parameters.len(), "one parameter per placeholder");
            Ok(self.0.clone())
        }
    }

    fn answer(rows: &[[&str; 5]]) -> QueryRows {
        QueryRows {
            columns: ["key_id", "day", "successful_calls", "failed_calls", "usage_count"]
                .map(String::from)
                .to_vec(),
            rows: rows.iter().map(|r| r.map(String::from).to_vec()).collect(),
            scanned_bytes: Some(1_234),
        }
    }

    #[test]
    fn the_parameters_are_the_folders_either_side_and_the_days_as_literals() {
        assert_eq!(
            range_parameters(day("2026-11-01"), day("2026-11-30")),
            ["20261031", "20261201", "'2026-11-01'", "'2026-11-30'"]
        );
    }

    #[tokio::test]
    async fn the_result_becomes_rollup_rows_sorted_by_day_and_key() {
        let engine = Canned(answer(&[
            ["b", "2026-11-02", "1", "0", "2"],
            ["a", "2026-11-02", "0", "1", "1"],
            ["z", "2026-11-01", "5", "0", "5"],
        ]));
        let rollup = rollup_on(&engine, day("2026-11-01"), day("2026-11-02")).await.unwrap();
        let keys: Vec<_> = rollup.rows.iter().map(|r| (r.key_id.as_str(), r.day.to_string())).collect();
        assert_eq!(
            keys,
            [("z", "2026-11-01".into()), ("a", "2026-11-02".into()), ("b", "2026-11-02".into())]
        );
        assert_eq!(rollup.rows[2].tally, Tally { successful_calls: 1, failed_calls: 0, usage_count: 2 });
        assert_eq!((rollup.stats.distinct, rollup.stats.bytes), (8, 1_234));
    }

    #[tokio::test]
    async fn a_result_that_is_not_a_rollup_is_refused_with_its_line() {
        let range = (day("2026-11-01"), day("2026-11-30"));
        for (rows, says) in [
            (answer(&[["a", "2026-11-01", "x", "0", "1"]]), "line 2: successful_calls \"x\""),
            (answer(&[["a", "2026-12-01", "1", "0", "1"]]), "outside"),
            (answer(&[["a", "someday", "1", "0", "1"]]), "not a day"),
            (QueryRows { columns: vec!["n".into()], ..QueryRows::default() }, "columns"),
        ] {
            let err = rollup_on(&Canned(rows), range.0, range.1).await.unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
