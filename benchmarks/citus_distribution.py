"""Which distribution column for `trips` on Citus: region_id (co-located with the summaries) or
id (a hash spreading every region over all shards, the summaries stay by region_id)?

    python -m benchmarks.citus_distribution [--rows 300000] [--workers 2] [--url COORDINATOR]

On a throwaway CitusCluster (or the coordinator given, whose `trips` data is REPLACED), for
each variant: empty the store, lay `trips` out, ingest the same generated file with the
service's loader (one large job: its own partition; its table distributed before the COPY, or,
in the "local job table" variant, COPY FREEZE into a local table that ATTACH distributes), then
the query benchmark of benchmarks/queries.py (service answers only) and where the trips' rows
went (bytes per worker). Prints JSON; the numbers and the decision are in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.queries import run_query_benchmark
from service.db.migrate import migrate
from service.generate import generate_file
from service.ingest import citus_load
from service.settings import Settings
from tests import citus_mode
from tests.helpers import ingest

LAYOUT = {
    "region_id": [
        "SELECT undistribute_table('trips', cascade_via_foreign_keys => false)",
        "SELECT create_distributed_table('trips', 'region_id', colocate_with => 'weekly_trips')",
    ],
    "id": [
        "SELECT undistribute_table('trips', cascade_via_foreign_keys => false)",
        "SELECT create_distributed_table('trips', 'id', colocate_with => 'none')",
    ],
}


# variant -> (trips' distribution column, the job table: distributed before its COPY, or local
# with COPY FREEZE and distributed by its ATTACH)
VARIANTS = {
    "region_id": ("region_id", "distributed"),
    "region_id, local job table": ("region_id", "local"),
    "id": ("id", "distributed"),
}


@contextlib.contextmanager
def _job_table(kind: str, column: str) -> Iterator[None]:
    saved = citus_load.is_citus, citus_load.distribute_job_table

    def distribute(load: psycopg.Connection, name: str) -> None:
        load.execute(
            "SELECT create_distributed_table(%s, %s, colocate_with => 'trips')", [name, column]
        )

    citus_load.distribute_job_table = distribute
    if kind == "local":
        citus_load.is_citus = lambda conn: False
    try:
        yield
    finally:
        citus_load.is_citus, citus_load.distribute_job_table = saved


def _layout(url: str, column: str) -> None:
    citus_mode.emptied(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LAYOUT[column]:
            conn.execute(statement)


def _placement(url: str, column: str) -> dict[str, Any]:
    """Trips per worker, and how many of trips' shards hold any."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                """SELECT p.nodeport, count(DISTINCT x.shard), count(*)
                   FROM (SELECT get_shard_id_for_distribution_column('trips', {}) AS shard
                         FROM trips) x
                   JOIN pg_dist_shard_placement p ON p.shardid = x.shard
                   GROUP BY 1 ORDER BY 1"""
            ).format(sql.Identifier(column))
        ).fetchall()
    return {str(port): {"shards_with_rows": n, "trips": t} for port, n, t in rows}


def measure(url: str, rows: int, seed: int) -> dict[str, Any]:
    migrate(url)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        path = Path(tmp) / "trips.csv"
        generate_file(path, rows, seed)
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp),
            upload_dir=Path(tmp) / "uploads",
            api_log=None,
            watch_inbox=False,
            small_job_rows=0,
            _env_file=None,  # type: ignore[call-arg]
        )
        for variant, (column, job_table) in VARIANTS.items():
            _layout(url, column)
            t = time.monotonic()
            with _job_table(job_table, column):
                job = ingest(url, settings, path)
            assert job["state"] == "succeeded", job
            ingest_s = time.monotonic() - t
            queries = run_query_benchmark(url, seed, plain=False)
            queries.pop("_meta", None)
            out[variant] = {
                "ingest_s": round(ingest_s, 2),
                "p50_ms": {k: v["p50_ms"] for k, v in queries.items()},
                "placement": _placement(url, column),
            }
    _layout(url, "region_id")
    citus_mode.emptied(url)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--url", help="a coordinator whose trips data may be replaced")
    args = ap.parse_args()
    if args.url:
        result = measure(args.url, args.rows, args.seed)
    else:
        from service.db.citus import CitusCluster

        with CitusCluster(workers=args.workers) as url:
            result = measure(url, args.rows, args.seed)
    print(json.dumps({"rows": args.rows, "workers": args.workers, **result}, indent=2))


if __name__ == "__main__":
    main()
