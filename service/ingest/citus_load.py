"""Loading a job on a Citus coordinator (db/migrations/002_citus.sql distributes `trips`).

The loader's steps stay; on Citus one changes. The job's table is distributed by region_id,
co-located with `trips`, right after its CREATE TABLE and before its COPY:

* the COPY streams each row to its shard on a worker as it goes (without FREEZE: that needs a
  table created in the same transaction on the node that stores it);
* the job's CREATE INDEX statements are propagated to its shards, built by the workers;
* trip_rollups' aggregates over the job's table run on its shards (the weekly cells' temporary
  table and trip_cluster_rows' rows then pass through the coordinator into the summaries), and
  a small job's move into trips_p0 is a co-located INSERT … SELECT;
* ATTACH PARTITION of a co-located distributed table to `trips` moves no rows.

The other way that works (a local job table, COPY FREEZE, rollups on the coordinator, ATTACH,
which then distributes the table and copies its rows to the workers inside the job's
transaction) was measured slower: docs/scaling.md "Loading on Citus".
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def is_citus(conn: psycopg.Connection) -> bool:
    """Once per job: is the citus extension installed in this database?"""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
    ).fetchone()
    return bool(row and row[0])


def copy_options(citus: bool) -> sql.Composable:
    return sql.SQL("(FORMAT BINARY)" if citus else "(FORMAT BINARY, FREEZE)")


def distribute_job_table(load: psycopg.Connection, name: str) -> None:
    """Distributes the job's new, empty table like `trips` (in the load transaction, before its
    COPY); committed with it."""
    load.execute(
        "SELECT create_distributed_table(%s, 'region_id', colocate_with => 'trips')", [name]
    )
