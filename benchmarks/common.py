"""Shared pieces of the benchmarks: a database of their own, the ingest command, raw COPY."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
TRIPS = str(Path(sys.executable).parent / "trips")
DATA_DIR = Path(os.environ.get("TRIPS_BENCH_DATA", "/var/tmp/trips-bench"))
RAW_COPY_TABLE = "raw_copy_baseline"


def result_stem(at: datetime) -> str:
    """The name of a results file made at `at` (UTC, to the minute): runs of one day no longer
    overwrite each other."""
    return f"{at:%Y-%m-%dT%H%M}"


def write_checked(result: dict[str, Any], kind: str, out: Path | None = None) -> NoReturn:
    """Write a comparison's result to `out` (default results/<date>-<kind>-<rows>.json), print
    it, and exit 1 when it found differences (result["differences"]), else 0."""
    stem = result_stem(datetime.now(UTC))
    out = out or ROOT / "benchmarks" / "results" / f"{stem}-{kind}-{result['rows']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    raise SystemExit(1 if result["differences"] else 0)


def count_trips(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM trips").fetchone()[0])  # type: ignore[index]


# Result files of `benchmarks.run`: <date>-<rows> (until 2026-12-02) or <date>T<HHMM>-<rows>.
RUN_RESULT = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{4})?-(\d+)\.json")


def server_url() -> str:
    """DATABASE_URL when set, else the project's local cluster (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from service.db import cluster

    return cluster.up().url


def with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def fresh_database(name: str) -> str:
    """Drop and create database `name` on the benchmark server, migrated; never `trips`."""
    if name == "trips":
        raise ValueError("the benchmark never touches the dev database `trips`")
    server = server_url()
    admin = with_db(server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_db(server, name)
    from service.db.migrate import migrate

    migrate(url)
    return url


def drop_database(name: str) -> None:
    admin = with_db(server_url(), "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def generate(rows: int, out: Path, seed: int = 42) -> float:
    """`trips generate` into `out` (skipped when a file of that name exists); returns seconds."""
    if out.exists():
        return 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part" + "".join(out.suffixes[-1:]))
    t = time.monotonic()
    subprocess.run(
        [TRIPS, "generate", "--rows", str(rows), "--out", str(tmp), "--seed", str(seed)], check=True
    )
    tmp.rename(out)
    return time.monotonic() - t


@dataclass
class IngestRun:
    seconds: float
    peak_rss_bytes: int
    output: str


def trips_ingest(url: str, files: list[Path], force: bool = True) -> IngestRun:
    """`trips ingest FILE…` under /usr/bin/time -v: wall seconds and the peak RSS."""
    cmd = ["/usr/bin/time", "-v", TRIPS, "ingest", *map(str, files)]
    if force:
        cmd.append("--force")
    env = {**os.environ, "DATABASE_URL": url, "COLUMNS": "120"}
    t = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t
    if res.returncode != 0:
        raise RuntimeError(f"trips ingest failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    return IngestRun(seconds, int(m.group(1)) * 1024 if m else 0, res.stdout)


def raw_copy(url: str, files: list[Path]) -> float:
    """COPY the files as they are into an UNLOGGED table of five text columns; returns seconds.

    The reference the ingest is measured against: the cheapest possible load of the same bytes
    through the same client library, with no parsing, validation or index."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {RAW_COPY_TABLE}")
        conn.execute(
            f"CREATE UNLOGGED TABLE {RAW_COPY_TABLE} (region text, origin_coord text, "
            "destination_coord text, datetime text, datasource text)"
        )
        t = time.monotonic()
        for path in files:
            opener = gzip.open if path.suffix == ".gz" else open
            with (
                opener(path, "rb") as f,
                conn.cursor().copy(
                    f"COPY {RAW_COPY_TABLE} FROM STDIN (FORMAT csv, HEADER true)"
                ) as copy,
            ):
                while block := f.read(1 << 20):
                    copy.write(block)
        seconds = time.monotonic() - t
        conn.execute(f"DROP TABLE {RAW_COPY_TABLE}")
    return seconds


def count_rows(files: list[Path]) -> int:
    n = 0
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            while block := f.read(16 << 20):
                n += block.count(b"\n")
        n -= 1  # header
    return n
