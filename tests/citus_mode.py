"""The Citus pass of the test suite (TRIPS_TEST_CITUS=1, `make test`'s second run).

CREATE DATABASE … TEMPLATE does not work on Citus (a new database is not propagated to the
workers, nor is its citus extension), so the pass migrates ONE database on the coordinator and
every test gets it emptied: its job partitions dropped, every data table truncated, the
identities and the trip id counter restarted, the grid and cluster parameters back to the
baseline's defaults. The coordinator is DATABASE_URL's when it has the citus extension, else a
throwaway CitusCluster (a coordinator and two workers) for the session.

The few tests that cannot run there are skipped with their reason (SKIPS, listed in
docs/scaling.md too).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from service.db.migrate import migrate

ON = os.environ.get("TRIPS_TEST_CITUS") == "1"

PRIVATE_PG = "Citus pass: needs a private plain PostgreSQL server of its own, not Citus"
# test node id (a substring of it) -> why it is skipped in the Citus pass
SKIPS = {
    "test_migrations.py::test_empty_database_converges_to_the_model": (
        "Citus pass: drops the schema of the pass's one shared database (migrations from zero "
        "run in the plain pass)"
    ),
    "test_migrations.py::test_a_store_of_the_old_history_is_refused": (
        "Citus pass: drops the schema of the pass's one shared database"
    ),
    "e2e/test_citus_cluster.py": "Citus pass: starts clusters of its own, run in the plain pass",
    "e2e/test_local_cluster.py": "Citus pass: the single local cluster, run in the plain pass",
    "test_rollups.py::test_a_reader_waiting_on_the_swap": (
        "Citus pass: trip_clusters is distributed and merged in place, never swapped"
    ),
    "test_weekly_average.py::test_a_polygon_reads_the_job_tables_cut_cells_index_only": (
        "Citus pass: the plans are the workers' (the coordinator's is a distributed one, and "
        "auto_explain's nested statements break Citus's remote commands)"
    ),
}

# The data tables of db/migrations/001_baseline.sql (trips with its partitions).
TABLES = [
    "trips",
    "weekly_trips",
    "weekly_cell_trips",
    "trip_cells",
    "trip_clusters",
    "regions",
    "datasources",
    "ingestion_rejections",
    "ingestion_events",
    "ingestion_jobs",
]
RESET = [
    "UPDATE trip_id_counter SET next_id = 1",
    "UPDATE trip_grid SET cell = 0.005, block = 5",
    "UPDATE trip_cluster_params SET cell = 0.01, bucket_minutes = 60",
    "UPDATE trip_extent SET trips = 0, minx = NULL, miny = NULL, maxx = NULL, maxy = NULL,"
    " spanx = 0, spany = 0, t0 = NULL, t1 = NULL",
]


def has_citus(url: str) -> bool:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
        ).fetchone()
    return bool(row and row[0])


def coordinator_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url and has_citus(url):
        yield url
        return
    from service.db.citus import CitusCluster

    with CitusCluster(workers=2) as coordinator:
        yield coordinator


def migrated(url: str) -> str:
    """Migrates the coordinator's database; its name stands for the plain pass's template."""
    migrate(url)
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    assert isinstance(name, str)
    return name


def emptied(url: str) -> str:
    """The database as migrated: no rows, no job partitions, counters and parameters reset."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        for attempt in range(5):
            try:
                _empty(conn)
                return url
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                # an earlier test's worker thread reconnected meanwhile: terminate it again
                if attempt == 4:
                    raise
    return url


def _empty(conn: psycopg.Connection) -> None:
    # Like DROP DATABASE … WITH (FORCE) in the plain pass: an earlier test's leftovers (a
    # server thread, a listener) would otherwise hold locks the TRUNCATE waits for.
    conn.execute(
        """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND backend_type = 'client backend'
             AND application_name NOT LIKE 'citus%'"""
    )
    jobs = [
        name
        for (name,) in conn.execute(
            """SELECT relname FROM pg_class WHERE relkind IN ('r', 'p')
               AND relname ~ '^trips_job_[0-9]+$'
               AND relnamespace = 'public'::regnamespace"""
        )
    ]
    with conn.transaction():
        for name in jobs:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(map(sql.Identifier, TABLES))
            )
        )
        for statement in RESET:
            conn.execute(statement)


def relation(name: str) -> str:
    """A table's name from a row's tableoid: on Citus the row comes from a shard, named
    `<table>_<shard id>` (shard ids start at 102008)."""
    return re.sub(r"_1\d{5,}$", "", name) if ON else name


def mark_skips(items: list[pytest.Item]) -> None:
    if not ON:
        return
    for item in items:
        for key, reason in SKIPS.items():
            if key in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=reason))
