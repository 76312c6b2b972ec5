-- Billable, failed and all calls per UTC day over a range: the "billable vs failed over time" chart,
-- Athena (Trino) dialect. Deployed as the named query "meter daily totals".
--
-- Parameters: as rollup.sql (first folder, last folder, first day, last day).
-- Dialect traps: see rollup.sql.
WITH events AS (
  SELECT request_id, key_id, CAST(ts AS date) AS event_day, status_code, should_count
  FROM usage
  WHERE year * 10000 + month * 100 + day BETWEEN ? AND ?
    AND CAST(ts AS date) BETWEEN CAST(? AS date) AND CAST(? AS date)
),
requests AS (
  SELECT event_day, request_id,
         arbitrary(status_code) AS status_code,
         arbitrary(should_count) AS should_count
  FROM events
  GROUP BY event_day, request_id
)
SELECT CAST(event_day AS varchar) AS day,
       count_if(status_code BETWEEN 200 AND 299 AND should_count) AS successful_calls,
       count_if(status_code >= 400) AS failed_calls,
       count(*) AS usage_count
FROM requests
GROUP BY event_day
ORDER BY day
