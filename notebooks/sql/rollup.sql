-- meter rollup: distinct requests per key and UTC day (CONTRACTS.md §4, §6), Athena (Trino) dialect.
-- `meter rollup --engine athena` runs this file as it is; infra/ deploys it as the named query
-- "meter rollup". It must give exactly the Rust rollup's numbers: notebooks/test_notebooks.py transpiles
-- it to DuckDB with sqlglot and compares it with `meter rollup` on the same archive.
--
-- Parameters, in order (Athena execution parameters, literals):
--   1. first folder, yyyymmdd integer: the day before the first day   e.g. 20261031
--   2. last folder, yyyymmdd integer: the day after the last day      e.g. 20261201
--   3. first day, 'YYYY-MM-DD'                                         e.g. '2026-11-01'
--   4. last day, 'YYYY-MM-DD'                                          e.g. '2026-11-30'
--
-- Dialect traps, each met on the way:
-- - year/month/day are INTEGER partition keys (Glue projection `integer`); DuckDB infers hive
--   partition types unless told (`hive_types`), so its views declare them as INTEGER too.
-- - Folders are compared as one yyyymmdd number so that the predicate stays on partition keys and
--   constants: Athena prunes the projected partitions with it and reads three days, not the archive.
-- - An event sits in its own day's folder or a neighbour's: Firehose partitions whole CloudWatch
--   batches, and a batch spans at most 24 hours. Events further away are not read here; the Rust engine
--   reports such files as misplaced.
-- - `ts` is a timestamp in UTC (INT64 milliseconds in the files). Athena's `timestamp` has no zone
--   and is UTC here; DuckDB reads it as TIMESTAMP WITH TIME ZONE, so its session must be UTC or
--   CAST(ts AS date) moves events across midnight.
-- - count(*) and count_if are BIGINT in both engines (a sum would be HUGEINT in DuckDB).
-- - should_count NULL is "not marked": `... AND should_count` is NULL then, and count_if skips it.
WITH events AS (
  SELECT request_id, key_id, CAST(ts AS date) AS event_day, status_code, should_count
  FROM usage
  WHERE year * 10000 + month * 100 + day BETWEEN ? AND ?
    AND CAST(ts AS date) BETWEEN CAST(? AS date) AND CAST(? AS date)
),
-- The archive is at-least-once: a request counts once per day whatever the number of its copies.
requests AS (
  SELECT event_day, request_id,
         arbitrary(key_id) AS key_id,
         arbitrary(status_code) AS status_code,
         arbitrary(should_count) AS should_count
  FROM events
  GROUP BY event_day, request_id
)
SELECT key_id,
       CAST(event_day AS varchar) AS day,
       count_if(status_code BETWEEN 200 AND 299 AND should_count) AS successful_calls,
       count_if(status_code >= 400) AS failed_calls,
       count(*) AS usage_count
FROM requests
GROUP BY key_id, event_day
ORDER BY day, key_id
