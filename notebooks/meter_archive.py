"""The notebooks' access to a meter archive (CONTRACTS.md §5), local or on S3, and to the Athena SQL of
notebooks/sql/ run on DuckDB.

The same SQL files are Athena named queries (infra/) and the rollup of `meter rollup --engine athena`;
here sqlglot transpiles them to DuckDB, so a notebook's numbers and Athena's come from one text.

Files beside the archive, all optional: `rollups/` (reconcile's rollups), `drift/run=*/summary.json`
(reconcile runs), `rejects/` (rejected usage lines), `keys/keys.parquet` (the key directory snapshot
the reconcile job writes). Reports live under their own location (`METER_REPORTS`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import sqlglot

SQL_DIR = Path(__file__).resolve().parent / "sql"
# Repository root's `meter demo` output: the default archive when METER_ARCHIVE is not set.
DEFAULT_HOME = Path(__file__).resolve().parent.parent / ".meter" / "demo"


def locations() -> tuple[str, str]:
    """The archive and reports locations from METER_ARCHIVE / METER_REPORTS (the CLI's variables),
    defaulting to what `meter demo` wrote in this clone."""
    archive = os.environ.get("METER_ARCHIVE") or str(DEFAULT_HOME / "archive")
    reports = os.environ.get("METER_REPORTS") or str(DEFAULT_HOME / "reports")
    return archive.rstrip("/"), reports.rstrip("/")


@dataclass
class Location:
    """A directory, local or `s3://bucket/prefix`, read through pyarrow's file systems."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def of(cls, uri: str) -> "Location":
        if "://" not in uri:
            uri = str(Path(uri).resolve())
        fs, path = pafs.FileSystem.from_uri(uri)
        return cls(fs, path.rstrip("/"), uri.rstrip("/"))

    def child(self, relative: str) -> "Location":
        return Location(self.fs, f"{self.path}/{relative}", f"{self.uri}/{relative}")

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def files(self, suffix: str) -> list[str]:
        """Every file under this directory whose name ends with `suffix`, sorted; none if absent."""
        if not self.exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")

    def subdirs(self) -> list[str]:
        if not self.exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def folder(day: date) -> str:
    return f"year={day.year:04d}/month={day.month:02d}/day={day.day:02d}"


def months(archive: Location) -> list[str]:
    """The months ('YYYY-MM') the archive has day folders for."""
    out = []
    for year in archive.subdirs():
        if year.startswith("year="):
            out += [f"{year[5:]}-{m[6:]}" for m in archive.child(year).subdirs() if m.startswith("month=")]
    return sorted(out)


def default_month(archive_uri: str) -> str:
    """The month with the most day folders (the latest on a tie): an archive's edges hold a stray day of
    the neighbouring months."""
    location = Location.of(archive_uri)
    found = {m: len(location.child(f"year={m[:4]}/month={m[5:]}").subdirs()) for m in months(location)}
    if not found:
        raise SystemExit(
            f"{archive_uri} holds no day folders (year=YYYY/month=MM/day=DD): set METER_ARCHIVE to an archive, "
            "or run `cargo run --release -p meter -- demo` first"
        )
    return max(found, key=lambda m: (found[m], m))


def month_days(month: str) -> tuple[date, date]:
    first = date.fromisoformat(f"{month}-01")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def parameters(first: date, last: date) -> list:
    """The four execution parameters every range query takes (notebooks/sql/rollup.sql)."""
    as_number = lambda d: int(d.strftime("%Y%m%d"))  # noqa: E731
    return [as_number(first - timedelta(days=1)), as_number(last + timedelta(days=1)), first.isoformat(),
            last.isoformat()]


def athena_sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def duckdb_sql(name: str) -> str:
    """An Athena query of notebooks/sql/, transpiled to DuckDB."""
    return sqlglot.transpile(athena_sql(name), read="athena", write="duckdb")[0]


class Archive:
    """The archive's events of a range of days (and one day either side, where events of the range may
    sit) as the DuckDB table `usage`, with the partition columns Athena's table has; the key directory
    snapshot as `keys` when there is one."""

    def __init__(self, uri: str, first: date, last: date):
        self.location = Location.of(uri)
        self.first, self.last = first, last
        self.con = duckdb.connect()
        # DuckDB reads the archive's UTC timestamps as TIMESTAMPTZ: days must be cut in UTC.
        self.con.execute("SET TimeZone = 'UTC'")
        files = []
        day = first - timedelta(days=1)
        while day <= last + timedelta(days=1):
            files += self.location.child(folder(day)).files(".parquet")
            day += timedelta(days=1)
        self.files = files
        # The archive's schema (CONTRACTS.md §5) stated, not inferred: optional columns may be absent
        # from some files (they read as NULL), and the partition columns are INTEGER as in Glue.
        schema = pa.schema([
            ("request_id", pa.string()), ("key_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
            ("status_code", pa.int32()), ("should_count", pa.bool_()), ("method", pa.string()),
            ("resource", pa.string()), ("latency_ms", pa.int32()),
            ("year", pa.int32()), ("month", pa.int32()), ("day", pa.int32()),
        ])
        partitioning = ds.partitioning(pa.schema([("year", pa.int32()), ("month", pa.int32()), ("day", pa.int32())]),
                                       flavor="hive")
        table = ds.dataset(files, schema=schema, filesystem=self.location.fs, format="parquet",
                           partitioning=partitioning).to_table() if files else schema.empty_table()
        self.con.register("usage", table)
        self.has_keys = self._register_keys()

    def _register_keys(self) -> bool:
        snapshot = self.location.child("keys").files(".parquet")
        if snapshot:
            keys = ds.dataset(snapshot, filesystem=self.location.fs, format="parquet").to_table()
            self.con.register("keys", keys)
            return True
        self.con.execute("CREATE TABLE keys (key_id VARCHAR, customer_email VARCHAR, plan VARCHAR)")
        return False

    def query(self, name: str) -> pl.DataFrame:
        """Runs notebooks/sql/NAME.sql (transpiled to DuckDB) over the range."""
        return _integers(pl.from_arrow(self.con.sql(duckdb_sql(name), params=parameters(self.first, self.last))
                                       .to_arrow_table()))

    def sql(self, text: str) -> pl.DataFrame:
        return _integers(pl.from_arrow(self.con.sql(text).to_arrow_table()))


def _integers(frame: pl.DataFrame) -> pl.DataFrame:
    """Counts as Int64: DuckDB's count_if and sum are HUGEINT, which arrive as DECIMAL(38, 0)."""
    return frame.with_columns(
        pl.col(name).cast(pl.Int64) for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Decimal) and dtype.scale == 0
    )


def drift_runs(archive_uri: str) -> pl.DataFrame:
    """The reconcile runs recorded beside the archive (drift/run=*/summary.json), oldest first."""
    location = Location.of(archive_uri).child("drift")
    runs = [json.loads(location.read_text(path)) for path in location.files("summary.json")]
    if not runs:
        return pl.DataFrame()
    return pl.DataFrame(runs).sort("startedAt")


def rejects(archive_uri: str, first: date, last: date) -> pl.DataFrame:
    """Rejected usage lines (reason, detail, log time) kept under rejects/ for the folders of the range."""
    location = Location.of(archive_uri).child("rejects")
    rows, day = [], first
    while day <= last:
        for path in location.child(folder(day)).files(".jsonl"):
            for line in location.read_text(path).splitlines():
                if line.strip():
                    record = json.loads(line)
                    rows.append({"day": day.isoformat(), "reason": record.get("reason", "?"),
                                 "detail": record.get("detail", "")})
        day += timedelta(days=1)
    return pl.DataFrame(rows, schema={"day": pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8})


def issued_months(reports_uri: str) -> list[str]:
    """The months with issued invoices under the reports location (issued/month=YYYY-MM/)."""
    return [d[6:] for d in Location.of(reports_uri).child("issued").subdirs() if d.startswith("month=")]


def invoices(reports_uri: str, month: str) -> pl.DataFrame:
    location = Location.of(reports_uri).child(f"issued/month={month}")
    with location.fs.open_input_file(f"{location.path}/invoices.parquet") as f:
        return pl.from_arrow(pq.read_table(f))
