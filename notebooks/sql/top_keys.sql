-- The 20 keys with the most billable calls over a range of days, with their failures, Athena (Trino)
-- dialect. Deployed as the named query "meter top keys".
--
-- Parameters: as rollup.sql (first folder, last folder, first day, last day).
-- Dialect traps: see rollup.sql. A ratio is computed in DOUBLE on purpose: `a / b` of two integers is
-- integer division in Athena and fractional in DuckDB (sqlglot does not rewrite it).
WITH events AS (
  SELECT request_id, key_id, CAST(ts AS date) AS event_day, status_code, should_count
  FROM usage
  WHERE year * 10000 + month * 100 + day BETWEEN ? AND ?
    AND CAST(ts AS date) BETWEEN CAST(? AS date) AND CAST(? AS date)
),
requests AS (
  SELECT event_day, request_id,
         arbitrary(key_id) AS key_id,
         arbitrary(status_code) AS status_code,
         arbitrary(should_count) AS should_count
  FROM events
  GROUP BY event_day, request_id
)
SELECT key_id,
       count_if(status_code BETWEEN 200 AND 299 AND should_count) AS successful_calls,
       count_if(status_code >= 400) AS failed_calls,
       count(*) AS usage_count,
       round(CAST(count_if(status_code >= 400) AS double) / count(*), 4) AS failure_rate
FROM requests
GROUP BY key_id
ORDER BY successful_calls DESC, key_id
LIMIT 20
