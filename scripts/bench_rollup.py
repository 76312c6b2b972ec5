"""DuckDB side of the rollup benchmark: several SQL formulations of the same rollup, each timed and
checked against meter's own rollup file. Prints one line per formulation and the best time."""

import glob
import resource
import sys
import time
from datetime import date, timedelta

import duckdb

root, ours, first, last, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)

COUNTS = """
    count(*) FILTER (WHERE status_code BETWEEN 200 AND 299 AND should_count) AS successful_calls,
    count(*) FILTER (WHERE status_code >= 400) AS failed_calls,
    count(*) AS usage_count"""


def folder(d):
    return f"{root}/year={d.year:04d}/month={d.month:02d}/day={d.day:02d}/*.parquet"


def folders(lo, hi):
    out, d = [], lo
    while d <= hi:
        out.append(folder(d))
        d += timedelta(days=1)
    return out


def source(lo, hi):
    # Only folders that exist: DuckDB fails on a pattern that matches nothing.
    existing = [f for f in folders(lo - timedelta(days=1), hi + timedelta(days=1)) if glob.glob(f)]
    files = ", ".join(f"'{f}'" for f in existing)
    return (
        f"(SELECT request_id, key_id, CAST(ts AS DATE) AS day, status_code, should_count "
        f"FROM read_parquet([{files}], union_by_name = true) "
        f"WHERE CAST(ts AS DATE) BETWEEN DATE '{lo}' AND DATE '{hi}')"
    )


def group_by_request(lo, hi):
    return f"""
        SELECT key_id, CAST(day AS VARCHAR) AS day, {COUNTS} FROM (
            SELECT request_id, day, any_value(key_id) AS key_id, any_value(status_code) AS status_code,
                   any_value(should_count) AS should_count
            FROM {source(lo, hi)} GROUP BY request_id, day)
        GROUP BY key_id, day"""


def distinct_rows(lo, hi):
    return f"""
        SELECT key_id, CAST(day AS VARCHAR) AS day, {COUNTS} FROM (
            SELECT DISTINCT request_id, day, key_id, status_code, should_count FROM {source(lo, hi)})
        GROUP BY key_id, day"""


def distinct_on(lo, hi):
    return f"""
        SELECT key_id, CAST(day AS VARCHAR) AS day, {COUNTS} FROM (
            SELECT DISTINCT ON (request_id, day) * FROM {source(lo, hi)})
        GROUP BY key_id, day"""


def whole_range(build):
    def run(con):
        return con.execute(build(first_day, last_day)).fetchall()

    return run


def per_day(build):
    def run(con):
        rows, d = [], first_day
        while d <= last_day:
            rows += con.execute(build(d, d)).fetchall()
            d += timedelta(days=1)
        return rows

    return run


con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET TimeZone = 'UTC'")
expected = sorted(
    tuple(r)
    for r in con.execute(
        f"SELECT key_id, day, successful_calls, failed_calls, usage_count FROM read_parquet('{ours}')"
    ).fetchall()
)

best = None
for name, run in [
    ("group by request, whole range", whole_range(group_by_request)),
    ("distinct rows, whole range", whole_range(distinct_rows)),
    ("distinct on, whole range", whole_range(distinct_on)),
    ("group by request, one query per day", per_day(group_by_request)),
    ("distinct rows, one query per day", per_day(distinct_rows)),
]:
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    rows = run(con)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    user = cpu_after.ru_utime - cpu_before.ru_utime
    system = cpu_after.ru_stime - cpu_before.ru_stime
    correct = sorted(tuple(r) for r in rows) == expected
    print(
        f"duckdb {name}: {seconds:.2f} s (user {user:.2f} s, system {system:.2f} s, "
        f"{(user + system) / seconds:.2f} cores busy)"
        f"{'' if correct else '  (WRONG: differs from meter rollup)'}"
    )
    if correct and (best is None or seconds < best):
        best = seconds
print(f"duckdb best correct: {best:.2f} s" if best is not None else "duckdb: no formulation was correct")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"duckdb peak memory (the whole script): {peak} MiB")
