-- Billable calls per customer and plan over a range of days (a month: its first and last day), the
-- numbers the monthly invoices price (CONTRACTS.md §4, §6), Athena (Trino) dialect. Deployed as the
-- named query "meter billable calls by customer"; parity-tested against `meter report`.
--
-- Parameters: as rollup.sql (first folder, last folder, first day, last day).
-- The customer of a key comes from the key directory snapshot the reconcile job writes beside the
-- archive (keys/keys.parquet, table `keys`). Usage of keys it does not know is `(unattributed)`, as
-- the reports list it; it is never billed.
--
-- Dialect traps: see rollup.sql. sum() is BIGINT in Athena and HUGEINT in DuckDB: compare as numbers.
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
SELECT coalesce(k.customer_email, '(unattributed)') AS customer_email,
       coalesce(k.plan, '') AS plan,
       count_if(r.status_code BETWEEN 200 AND 299 AND r.should_count) AS successful_calls,
       count_if(r.status_code >= 400) AS failed_calls,
       count(*) AS usage_count,
       count(DISTINCT r.key_id) AS keys
FROM requests r
LEFT JOIN keys k ON k.key_id = r.key_id
GROUP BY coalesce(k.customer_email, '(unattributed)'), coalesce(k.plan, '')
ORDER BY successful_calls DESC, customer_email
