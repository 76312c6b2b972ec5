"""The notebooks and the Athena SQL, checked against meter itself.

- SQL parity: each query of sql/ (Athena dialect), transpiled to DuckDB by sqlglot and run over a test
  archive, gives exactly the numbers of `meter rollup` and `meter report` on the same data.
- Every notebook runs top to bottom (nbclient) on two archives: one `meter demo` wrote (reconcile runs,
  key directory, issued invoices beside it) and a bare one from `meter gen-archive` (nothing beside it:
  each section whose input is absent must say so and carry on). The notebooks' own variables are then
  read from their kernel and compared with `meter rollup` / `meter report`, not just "it ran".
- The archive read from S3 (moto, METER_TEST_AWS_ENDPOINT, as scripts/test sets it) gives the same rollup.
- The committed notebooks carry no outputs.

Usage: test_notebooks.py METER_BINARY   Prints one line per test and a libtest-style summary (read by
scripts/test); exits 1 on a failure.
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
import traceback
from datetime import date
from pathlib import Path

import nbclient
import nbformat
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import meter_archive as ma  # noqa: E402

NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
COUNTS = ["successful_calls", "failed_calls", "usage_count"]
METER = sys.argv[1] if len(sys.argv) > 1 else "meter"
WORK = Path(tempfile.mkdtemp(prefix="meter-notebooks-"))


def meter(*args: str, home: Path) -> str:
    done = subprocess.run([METER, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "METER_HOME": str(home)})
    assert done.returncode == 0, f"meter {' '.join(args)}: {done.stderr}"
    return done.stdout


class Fixture:
    """An archive, its reports location, its main month and `meter rollup`'s answer for that month."""

    def __init__(self, name: str, archive: Path, reports: Path, month: str):
        self.name, self.archive, self.reports, self.month = name, archive, reports, month
        self.first, self.last = ma.month_days(month)
        out = WORK / f"{name}-rollup.csv"
        meter("rollup", "--archive", str(archive), "--from", str(self.first), "--to", str(self.last),
              "--out", str(out), home=WORK)
        self.rollup = pl.read_csv(out, schema_overrides={"day": pl.Utf8, **{c: pl.Int64 for c in COUNTS}})

    def env(self) -> dict:
        return {"METER_ARCHIVE": str(self.archive), "METER_REPORTS": str(self.reports), "METER_MONTH": self.month}


def demo_fixture() -> Fixture:
    home = WORK / "demo-home"
    meter("demo", "--events", "20000", "--keys", "40", "--month", "2026-11", home=home)
    return Fixture("demo", home / "demo" / "archive", home / "demo" / "reports", "2026-11")


def bare_fixture() -> Fixture:
    archive = WORK / "bare-archive"
    meter("gen-archive", "--out", str(archive), "--events", "6000", "--keys", "30", "--month", "2026-10",
          "--files-per-day", "2", home=WORK)
    return Fixture("bare", archive, WORK / "no-reports", "2026-10")


def sorted_frame(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return frame.with_columns(pl.col(c).cast(pl.Int64) for c in COUNTS if c in frame.columns).sort(by)


def assert_frames_equal(got: pl.DataFrame, want: pl.DataFrame, what: str) -> None:
    assert got.columns == want.columns, f"{what}: columns {got.columns} != {want.columns}"
    assert got.equals(want), f"{what} differs:\ngot\n{got}\nwant\n{want}"


# --- SQL parity -----------------------------------------------------------------------------------------

def check_rollup_sql(fixture: Fixture) -> None:
    got = ma.Archive(str(fixture.archive), fixture.first, fixture.last).query("rollup")
    assert got.height > 0, "the rollup is empty"
    assert_frames_equal(sorted_frame(got, ["day", "key_id"]), sorted_frame(fixture.rollup, ["day", "key_id"]),
                        f"rollup.sql on the {fixture.name} archive vs meter rollup")


def check_daily_and_top_keys_sql(fixture: Fixture) -> None:
    archive = ma.Archive(str(fixture.archive), fixture.first, fixture.last)
    want_daily = fixture.rollup.group_by("day").agg(pl.col(COUNTS).sum()).sort("day")
    assert_frames_equal(sorted_frame(archive.query("daily_totals"), ["day"]), sorted_frame(want_daily, ["day"]),
                        "daily_totals.sql vs meter rollup")
    per_key = fixture.rollup.group_by("key_id").agg(pl.col(COUNTS).sum())
    want_top = per_key.sort(["successful_calls", "key_id"], descending=[True, False]).head(20)
    got_top = archive.query("top_keys")
    assert_frames_equal(got_top.select("key_id", *COUNTS).with_columns(pl.col(COUNTS).cast(pl.Int64)),
                        want_top.select("key_id", *COUNTS), "top_keys.sql vs meter rollup")
    failed = got_top["failed_calls"].to_list()
    usage = got_top["usage_count"].to_list()
    rates = got_top["failure_rate"].to_list()
    assert all(abs(r - round(f / u, 4)) < 1e-9 for r, f, u in zip(rates, failed, usage)), \
        "failure_rate is not computed in floating point (integer division?)"


def check_billable_by_customer_sql(fixture: Fixture) -> None:
    got = ma.Archive(str(fixture.archive), fixture.first, fixture.last).query("billable_by_customer")
    invoices = pl.read_csv(fixture.reports / "issued" / f"month={fixture.month}" / "invoices.csv")
    want = invoices.group_by("customer_email").agg(pl.col(COUNTS).cast(pl.Int64).sum())
    attributed = got.filter(pl.col("customer_email") != "(unattributed)").group_by("customer_email").agg(
        pl.col(COUNTS).sum())
    assert_frames_equal(sorted_frame(attributed, ["customer_email"]), sorted_frame(want, ["customer_email"]),
                        "billable_by_customer.sql vs meter report's invoices.csv")
    manifest = json.loads((fixture.reports / "issued" / f"month={fixture.month}" / "manifest.json").read_text())
    unattributed = got.filter(pl.col("customer_email") == "(unattributed)")["usage_count"].sum()
    assert unattributed == manifest["totals"]["unattributed_usage_count"], \
        f"unattributed {unattributed} vs the report's {manifest['totals']['unattributed_usage_count']}"
    assert unattributed > 0, "the demo's unknown keys should show as unattributed usage"


def check_resources_sql(fixture: Fixture) -> None:
    archive = ma.Archive(str(fixture.archive), fixture.first, fixture.last)
    got = archive.query("resources")
    # The same numbers computed another way: polars over the deduplicated events of the month.
    events = archive.sql(
        "SELECT request_id, CAST(ts AS DATE) AS event_day, status_code, coalesce(method, '') AS method, "
        "coalesce(resource, '(none)') AS resource, latency_ms FROM usage").filter(
        pl.col("event_day").is_between(fixture.first, fixture.last)).unique(["event_day", "request_id"])
    want = events.group_by("method", "resource").agg(
        pl.len().cast(pl.Int64).alias("calls"),
        (pl.col("status_code") >= 400).sum().cast(pl.Int64).alias("failed_calls"),
        pl.col("latency_ms").quantile(0.5).alias("p50"),
        pl.col("latency_ms").quantile(0.99).alias("p99"),
    )
    both = got.join(want, on=["method", "resource"], how="full", coalesce=True)
    assert both.height == got.height == want.height, f"resources differ:\n{got}\n{want}"
    assert (both["calls"] == both["calls_right"]).all() and (both["failed_calls"] == both["failed_calls_right"]).all(), \
        f"resource counts differ:\n{both}"
    assert sum(got["calls"]) == fixture.rollup["usage_count"].sum()
    for approx, exact in [("p50_latency_ms", "p50"), ("p99_latency_ms", "p99")]:
        for a, e in zip(both[approx].to_list(), both[exact].to_list()):
            assert abs(a - e) <= max(0.05 * e, 5), f"{approx} {a} is far from the exact {e}"


def check_an_archive_on_s3(fixture: Fixture) -> None:
    """The same archive read from S3 (the emulator scripts/test starts) gives the same rollup."""
    import boto3

    endpoint = os.environ.get("METER_TEST_AWS_ENDPOINT")
    assert endpoint, "METER_TEST_AWS_ENDPOINT is not set: run scripts/test, which starts the AWS emulator"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"meter-notebooks-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    for path in fixture.archive.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"usage/{path.relative_to(fixture.archive).as_posix()}")
    archive = ma.Archive(f"s3://{bucket}/usage", fixture.first, fixture.last)
    assert archive.has_keys, "the key directory snapshot is read from S3 too"
    assert_frames_equal(sorted_frame(archive.query("rollup"), ["day", "key_id"]),
                        sorted_frame(fixture.rollup, ["day", "key_id"]), "rollup.sql over S3 vs meter rollup")
    assert ma.drift_runs(f"s3://{bucket}/usage").height > 0


def check_transpiled_sql_keeps_the_traps_in_mind() -> None:
    for path in sorted(ma.SQL_DIR.glob("*.sql")):
        athena = path.read_text()
        assert athena.count("?") == 4, f"{path.name}: the range queries take four parameters"
        duck = ma.duckdb_sql(path.stem)
        assert "ANY_VALUE" in duck or "arbitrary" not in athena, path.name
        # Integer division: every ratio is computed in DOUBLE on purpose.
        assert " / count(*)" not in athena or "AS double) / count(*)" in athena, path.name


# --- notebooks --------------------------------------------------------------------------------------

RESULT_MARK = "NOTEBOOK-RESULTS:"


def run_notebook(path: Path, fixture: Fixture, extract: str) -> tuple[dict, str]:
    """Executes the notebook with the fixture's locations, then one more cell that prints the
    notebook's own variables as JSON (`extract` is a Python expression over them). Returns them and
    everything the notebook printed."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(f"import json as _j\nprint({RESULT_MARK!r} + _j.dumps({extract}))"))
    saved = {k: os.environ.get(k) for k in fixture.env()}
    os.environ.update(fixture.env())
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    line = next(line for line in printed.splitlines() if line.startswith(RESULT_MARK))
    return json.loads(line[len(RESULT_MARK):]), printed


def rollup_of(rows: list[dict]) -> pl.DataFrame:
    return sorted_frame(pl.DataFrame(rows).select("key_id", "day", *COUNTS), ["day", "key_id"])


USAGE_EXTRACT = ('{"rollup": rollup.to_dicts(), "daily": daily.to_dicts(), "top": top.to_dicts(), '
                 '"per_customer": per_customer.to_dicts() if per_customer is not None else None, '
                 '"rejected": rejected.height}')


def check_usage_notebook(fixture: Fixture, keys_beside: bool) -> None:
    values, printed = run_notebook(HERE / "usage.ipynb", fixture, USAGE_EXTRACT)
    want = sorted_frame(fixture.rollup, ["day", "key_id"])
    assert_frames_equal(rollup_of(values["rollup"]), want, "the usage notebook's rollup vs meter rollup")
    daily = pl.DataFrame(values["daily"])
    for column in COUNTS:
        assert daily[column].sum() == fixture.rollup[column].sum(), f"daily {column}"
    assert values["top"][0]["successful_calls"] == fixture.rollup.group_by("key_id").agg(
        pl.col("successful_calls").sum())["successful_calls"].max()
    if keys_beside:
        per_customer = pl.DataFrame(values["per_customer"])
        assert per_customer["successful_calls"].sum() == fixture.rollup["successful_calls"].sum()
        assert values["rejected"] > 0, "the demo's faults include rejected lines"
    else:
        assert values["per_customer"] is None
        assert "no key directory snapshot" in printed, printed
        assert "no rejected lines" in printed, printed


def check_reconcile_notebook(fixture: Fixture, has_reports: bool) -> None:
    extract = '{"runs": runs.height, "checked": checked_invoices, "mismatches": len(mismatches)}'
    values, printed = run_notebook(HERE / "reconcile_and_invoices.ipynb", fixture, extract)
    if has_reports:
        runs = list((fixture.archive / "drift").glob("run=*/summary.json"))
        assert values["runs"] == len(runs) > 0, values
        with open(fixture.reports / "issued" / f"month={fixture.month}" / "invoices.csv") as f:
            invoices = len(list(csv.DictReader(f)))
        assert values["checked"] == invoices > 0, values
        assert values["mismatches"] == 0, printed
    else:
        assert values == {"runs": 0, "checked": 0, "mismatches": 0}, values
        assert "no reconcile runs recorded" in printed and "no issued invoices" in printed, printed


def check_outputs_are_stripped() -> None:
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, \
                    f"{path.name} holds outputs: run `nbstripout {path.relative_to(HERE.parent)}` before committing"


def main() -> int:
    demo, bare = demo_fixture(), bare_fixture()
    tests = [
        ("committed notebooks carry no outputs", check_outputs_are_stripped),
        ("the SQL files keep to their conventions", check_transpiled_sql_keeps_the_traps_in_mind),
        ("rollup.sql = meter rollup (demo archive)", lambda: check_rollup_sql(demo)),
        ("rollup.sql = meter rollup (generated archive, duplicates and straddling days)", lambda: check_rollup_sql(bare)),
        ("daily_totals.sql and top_keys.sql = meter rollup", lambda: check_daily_and_top_keys_sql(bare)),
        ("billable_by_customer.sql = meter report's invoices", lambda: check_billable_by_customer_sql(demo)),
        ("resources.sql counts exact, percentiles close", lambda: check_resources_sql(demo)),
        ("an archive on S3 (the emulator) reads the same", lambda: check_an_archive_on_s3(demo)),
        ("usage notebook = meter rollup (demo)", lambda: check_usage_notebook(demo, keys_beside=True)),
        ("usage notebook on a bare archive says what is absent", lambda: check_usage_notebook(bare, keys_beside=False)),
        ("reconcile notebook = meter report (demo)", lambda: check_reconcile_notebook(demo, has_reports=True)),
        ("reconcile notebook on a bare archive says what is absent",
         lambda: check_reconcile_notebook(bare, has_reports=False)),
    ]
    failed = 0
    for name, test in tests:
        try:
            test()
            print(f"test {name} ... ok", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported, the others still run
            failed += 1
            print(f"test {name} ... FAILED\n{traceback.format_exc()}", flush=True)
    status = "ok" if failed == 0 else "FAILED"
    print(f"test result: {status}. {len(tests) - failed} passed; {failed} failed; 0 ignored (notebooks and Athena SQL parity)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
