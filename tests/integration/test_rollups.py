"""The summary tables a job stores (trip_rollups, db/migrations/001_baseline.sql) equal what is
computed from the stored trips, over several jobs whose keys overlap (small jobs moved into
trips_p0 and large ones in partitions of their own), and a cluster rebuild with new parameters
equals the brute force of SPEC section 2."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import psycopg

from service.analytics import clusters
from service.generate import generate_file
from service.settings import Settings
from tests import citus_mode
from tests.helpers import ingest, query

# Recomputed from `trips` in SQL, and what is stored: the two differences (both ways) are empty.
_DIFFS = {
    "weekly_trips": """
        SELECT region_id, date_trunc('week', started_at)::date AS week, datasource_id,
               count(*)::bigint AS trips, max(started_at) AS last_at
        FROM trips GROUP BY 1, 2, 3
        ---
        SELECT region_id, week, datasource_id, trips, last_at FROM weekly_trips""",
    # cells of each end (sides o, d) and their blocks (sides O, D)
    "weekly_cell_trips": """
        WITH s AS (
            SELECT 'o'::"char" AS side, floor(ST_X(origin) / g.cell)::int AS cx,
                   floor(ST_Y(origin) / g.cell)::int AS cy,
                   date_trunc('week', started_at)::date AS week, region_id, g.block
            FROM trips, trip_grid g
            UNION ALL
            SELECT 'd', floor(ST_X(destination) / g.cell)::int,
                   floor(ST_Y(destination) / g.cell)::int,
                   date_trunc('week', started_at)::date, region_id, g.block
            FROM trips, trip_grid g)
        SELECT side, cx, cy, week, region_id, count(*)::bigint FROM s GROUP BY 1, 2, 3, 4, 5
        UNION ALL
        SELECT upper(side::text)::"char", floor(cx / block::numeric)::int,
               floor(cy / block::numeric)::int, week, region_id, count(*)::bigint
        FROM s GROUP BY 1, 2, 3, 4, 5
        ---
        SELECT side, cx, cy, week, region_id, trips FROM weekly_cell_trips""",
    "trip_cells": """
        SELECT DISTINCT side, cx, cy FROM weekly_cell_trips
        ---
        SELECT side, cx, cy FROM trip_cells""",
    # the store's extent, time span and largest extent of one trip
    "trip_extent": """
        SELECT count(*)::bigint, min(least(ST_X(origin), ST_X(destination))),
               min(least(ST_Y(origin), ST_Y(destination))),
               max(greatest(ST_X(origin), ST_X(destination))),
               max(greatest(ST_Y(origin), ST_Y(destination))),
               coalesce(max(abs(ST_X(origin) - ST_X(destination))), 0),
               coalesce(max(abs(ST_Y(origin) - ST_Y(destination))), 0),
               min(started_at), max(started_at)
        FROM trips
        ---
        SELECT trips, minx, miny, maxx, maxy, spanx, spany, t0, t1 FROM trip_extent""",
}


def _assert_exact(db_url: str) -> None:
    for table, pair in _DIFFS.items():
        computed, stored = pair.split("---")
        for a, b in ((computed, stored), (stored, computed)):
            diff = "SELECT count(*) AS n FROM ((" + a + ") EXCEPT (" + b + ")) d"  # noqa: S608
            assert query(db_url, diff)[0]["n"] == 0, table
    # a cell's envelope is the cell's (or the block's) square
    wrong_env = query(
        db_url,
        """SELECT count(*) AS n FROM trip_cells c, trip_grid g
           WHERE NOT ST_OrderingEquals(c.env, CASE WHEN c.side IN ('o', 'd')
               THEN ST_MakeEnvelope(c.cx * g.cell, c.cy * g.cell, (c.cx + 1) * g.cell,
                                    (c.cy + 1) * g.cell, 4326)
               ELSE ST_MakeEnvelope(c.cx * g.block * g.cell, c.cy * g.block * g.cell,
                                    (c.cx + 1) * g.block * g.cell, (c.cy + 1) * g.block * g.cell,
                                    4326) END)""",
    )
    assert wrong_env[0]["n"] == 0
    _assert_clusters(db_url)


def _assert_clusters(db_url: str) -> None:
    """trip_clusters against the SPEC's brute force in Python: nodes rint(x / cell), halfway to
    even (Python's round), bucket floor(seconds / (minutes * 60)); counts and mean ends."""
    rows = query(
        db_url,
        """SELECT t.region_id, ST_X(t.origin) AS ox, ST_Y(t.origin) AS oy,
                  ST_X(t.destination) AS dx, ST_Y(t.destination) AS dy,
                  extract(epoch FROM t.started_at::time)::float8 AS s, p.cell, p.bucket_minutes
           FROM trips t, trip_cluster_params p""",
    )
    count: Counter = Counter()
    sums: dict = {}
    for r in rows:
        c = r["cell"]
        key = (
            r["region_id"],
            round(r["ox"] / c),
            round(r["oy"] / c),
            round(r["dx"] / c),
            round(r["dy"] / c),
            int(r["s"] // (r["bucket_minutes"] * 60)),
        )
        count[key] += 1
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += r["ox"]
        acc[1] += r["dy"]
    stored = query(
        db_url,
        "SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_dy FROM trip_clusters",
    )
    assert {tuple(s.values())[:6]: s["trips"] for s in stored} == dict(count)
    for s in stored:
        key = tuple(s.values())[:6]
        assert abs(s["sum_ox"] - sums[key][0]) < 1e-7 and abs(s["sum_dy"] - sums[key][1]) < 1e-7


def test_jobs_with_overlapping_keys_store_exact_rollups(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    small = settings.model_copy(update={"small_job_rows": 5000})
    oids = [_clusters_oid(db_url)]
    for seed, rows in ((1, 20_000), (2, 3000), (1, 20_000)):  # the third repeats the first
        p = tmp_path / f"t{seed}-{rows}.csv"
        if not p.exists():
            generate_file(p, rows, seed=seed)
        job = ingest(db_url, small, p, force=True)
        assert job["state"] == "succeeded", job["error"]
        oids.append(_clusters_oid(db_url))
    # trip_clusters written anew by the first and third jobs (many clusters against the stored
    # ones), merged in place by the second (3,000 trips against 20,000); always in place on Citus
    rewritten = [not citus_mode.ON, False, not citus_mode.ON]
    assert [a != b for a, b in zip(oids, oids[1:], strict=False)] == rewritten
    _assert_exact(db_url)
    parts = query(
        db_url, "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'trips'::regclass"
    )
    assert parts[0]["n"] == 3  # trips_p0 and the two large jobs' partitions
    # the in-place merge turns merge and hash joins off for its UPDATE alone: the caller's
    # session keeps its settings (a batch merged again, rolled back)
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE again AS SELECT * FROM trips LIMIT 500")
        conn.execute("SELECT trip_rollups('again'::regclass, false)")
        assert conn.execute("SELECT 'trip_clusters'::regclass::oid").fetchone()[0] == oids[-1]
        assert conn.execute("SHOW enable_mergejoin").fetchone()[0] == "on"
        assert conn.execute("SHOW enable_hashjoin").fetchone()[0] == "on"
        conn.rollback()


def _clusters_oid(db_url: str) -> int:
    return int(query(db_url, "SELECT 'trip_clusters'::regclass::oid AS o")[0]["o"])


def test_a_reader_waiting_on_the_swap_sees_the_new_clusters(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """A query of trip_clusters_near (the map's cluster tiles) that waits on the lock of
    trip_clusters_swap answers from the table put in place, not from an empty one: its snapshot
    is taken after its lock."""
    p = tmp_path / "t.csv"
    generate_file(p, 4000, seed=6)
    assert ingest(db_url, settings, p)["state"] == "succeeded"
    box = query(db_url, "SELECT ST_Extent(origin)::text AS b FROM trips")[0]["b"]
    top = "SELECT trips FROM trip_clusters_near(%s::box2d, 100)  -- swap test"
    before = query(db_url, top, [box])
    seen: list[list[dict]] = []
    with psycopg.connect(db_url) as job:
        job.execute("CREATE TEMP TABLE again AS SELECT * FROM trips")
        job.execute("SELECT trip_rollups('again', false)")  # every trip a second time
        job.execute("SELECT trip_clusters_swap()")
        reader = threading.Thread(target=lambda: seen.append(query(db_url, top, [box])))
        reader.start()
        with psycopg.connect(db_url, autocommit=True) as watch:
            waiting = 0
            for _ in range(200):  # until the reader waits on the lock (at most 10 s)
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%%-- swap test'"
                ).fetchone()[0]  # type: ignore[index]
                if waiting or not reader.is_alive():
                    break
                watch.execute("SELECT pg_sleep(0.05)")
        assert waiting == 1
        job.commit()
    reader.join(10)
    assert before and seen and [r["trips"] for r in seen[0]] == [2 * r["trips"] for r in before]


def test_rebuild_with_other_parameters_is_the_brute_force(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    p = tmp_path / "t.csv"
    generate_file(p, 6000, seed=4)
    assert ingest(db_url, settings, p)["state"] == "succeeded"
    with psycopg.connect(db_url, autocommit=True) as conn:
        n = clusters.rebuild(conn, 0.005, 30)
    assert n == query(db_url, "SELECT count(*) AS n FROM trip_clusters")[0]["n"] > 0
    _assert_clusters(db_url)
    # the next ingestion uses the stored parameters
    q = tmp_path / "u.csv"
    generate_file(q, 2000, seed=5)
    assert ingest(db_url, settings, q)["state"] == "succeeded"
    _assert_exact(db_url)
