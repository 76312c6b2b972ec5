-- Calls, failure rate and latency percentiles per method and resource over a range of days, Athena
-- (Trino) dialect. Deployed as the named query "meter resources".
--
-- Parameters: as rollup.sql (first folder, last folder, first day, last day).
-- Dialect traps: see rollup.sql. approx_percentile becomes DuckDB's approx_quantile: both are sketches
-- and may differ by a few percent, so the parity test compares the counts exactly and the percentiles
-- against the exact ones with a tolerance. latency_ms is optional in the usage line: requests without
-- one count as calls but not in the percentiles. The failure rate is computed in DOUBLE (integer
-- division differs between the engines).
WITH events AS (
  SELECT request_id, CAST(ts AS date) AS event_day, status_code, method, resource, latency_ms
  FROM usage
  WHERE year * 10000 + month * 100 + day BETWEEN ? AND ?
    AND CAST(ts AS date) BETWEEN CAST(? AS date) AND CAST(? AS date)
),
requests AS (
  SELECT event_day, request_id,
         arbitrary(status_code) AS status_code,
         arbitrary(coalesce(method, '')) AS method,
         arbitrary(coalesce(resource, '(none)')) AS resource,
         arbitrary(latency_ms) AS latency_ms
  FROM events
  GROUP BY event_day, request_id
)
SELECT method,
       resource,
       count(*) AS calls,
       count_if(status_code >= 400) AS failed_calls,
       round(CAST(count_if(status_code >= 400) AS double) / count(*), 4) AS failure_rate,
       approx_percentile(latency_ms, 0.5) AS p50_latency_ms,
       approx_percentile(latency_ms, 0.99) AS p99_latency_ms
FROM requests
GROUP BY method, resource
ORDER BY calls DESC, method, resource
