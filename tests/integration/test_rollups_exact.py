"""The rollups a job stores (client-side totals, migration 013) equal what SQL computes from the
stored trips, over several jobs whose keys overlap, and through the server-side fallback taken
when the grids change under a running job."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from service.generate import generate_file
from service.ingest import loader, rollups
from service.settings import Settings
from tests.helpers import ingest, query

# Every rollup recomputed from `trips` with the SQL definitions, and what is stored: the two
# differences (both ways) are empty.
_DIFFS = {
    "weekly_trips": """
        SELECT region_id, date_trunc('week', started_at)::date AS week, datasource_id,
               count(*)::bigint AS trips, max(started_at) AS last_at
        FROM trips GROUP BY 1, 2, 3
        ---
        SELECT region_id, week, datasource_id, trips, last_at FROM weekly_trips""",
    # cells (sides o, d), their blocks of 5 x 5 cells (sides O, D; migration 021), the pairs of
    # blocks of 0.05 degrees of the two ends (side P, each block as one integer; 022), and those
    # blocks of each end (sides p, q; 023)
    "weekly_cell_trips": """
        WITH s AS (
            SELECT 'o'::"char" AS side, floor(ST_X(origin) / g.cell)::int AS cx,
                   floor(ST_Y(origin) / g.cell)::int AS cy,
                   date_trunc('week', started_at)::date AS week, region_id
            FROM trips, rollup_grid g
            UNION ALL
            SELECT 'd', floor(ST_X(destination) / g.cell)::int,
                   floor(ST_Y(destination) / g.cell)::int,
                   date_trunc('week', started_at)::date, region_id
            FROM trips, rollup_grid g)
        SELECT side, cx, cy, week, region_id, count(*)::bigint FROM s GROUP BY 1, 2, 3, 4, 5
        UNION ALL
        SELECT CASE side WHEN 'o' THEN 'O'::"char" ELSE 'D' END, floor(cx / 5.0)::int,
               floor(cy / 5.0)::int, week, region_id, count(*)::bigint
        FROM s GROUP BY 1, 2, 3, 4, 5
        UNION ALL
        SELECT 'P'::"char",
               floor(ST_X(origin) / 0.05)::int * 4096 + floor(ST_Y(origin) / 0.05)::int + 2048,
               floor(ST_X(destination) / 0.05)::int * 4096
               + floor(ST_Y(destination) / 0.05)::int + 2048,
               date_trunc('week', started_at)::date, region_id, count(*)::bigint
        FROM trips GROUP BY 2, 3, 4, 5
        UNION ALL
        SELECT 'p'::"char", floor(ST_X(origin) / 0.05)::int, floor(ST_Y(origin) / 0.05)::int,
               date_trunc('week', started_at)::date, region_id, count(*)::bigint
        FROM trips GROUP BY 2, 3, 4, 5
        UNION ALL
        SELECT 'q'::"char", floor(ST_X(destination) / 0.05)::int,
               floor(ST_Y(destination) / 0.05)::int,
               date_trunc('week', started_at)::date, region_id, count(*)::bigint
        FROM trips GROUP BY 2, 3, 4, 5
        ---
        SELECT side, cx, cy, week, region_id, trips FROM weekly_cell_trips""",
    "trip_clusters": """
        SELECT region_id, floor(ST_X(origin) / p.cell)::int, floor(ST_Y(origin) / p.cell)::int,
                floor(ST_X(destination) / p.cell)::int, floor(ST_Y(destination) / p.cell)::int,
                floor(date_part('epoch', started_at::time) / (p.bucket_minutes * 60))::int,
                count(*)::bigint
        FROM trips, trip_cluster_params p GROUP BY 1, 2, 3, 4, 5, 6
        ---
        SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips FROM trip_clusters""",
}


def _assert_exact(db_url: str) -> None:
    for table, pair in _DIFFS.items():
        computed, stored = pair.split("---")
        for a, b in ((computed, stored), (stored, computed)):
            diff = "SELECT count(*) AS n FROM ((" + a + ") EXCEPT (" + b + ")) d"  # noqa: S608
            assert query(db_url, diff)[0]["n"] == 0, table
    sums = query(
        db_url,
        """SELECT count(*) AS n FROM trip_clusters c JOIN (
               SELECT region_id, floor(ST_X(origin) / 0.01)::int AS ocx,
                      floor(ST_Y(origin) / 0.01)::int AS ocy,
                      floor(ST_X(destination) / 0.01)::int AS dcx,
                      floor(ST_Y(destination) / 0.01)::int AS dcy,
                      floor(date_part('epoch', started_at::time) / 3600)::int AS bucket,
                      sum(ST_X(origin)) AS sx, sum(ST_Y(destination)) AS sy
               FROM trips GROUP BY 1, 2, 3, 4, 5, 6) t USING (region_id, ocx, ocy, dcx, dcy, bucket)
           WHERE abs(c.sum_ox - t.sx) > 1e-7 OR abs(c.sum_dy - t.sy) > 1e-7""",
    )
    assert sums[0]["n"] == 0
    # a key lives in one partition of its rollup only (db/migrations/017)
    for table, key in (
        ("weekly_cell_trips", "side, cx, cy, week, region_id"),
        ("trip_clusters", "region_id, ocx, ocy, dcx, dcy, bucket"),
    ):
        dup = f"SELECT count(*) AS n FROM (SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1) d"  # noqa: S608, E501
        assert query(db_url, dup)[0]["n"] == 0, table
    # the top table holds each region's first clusters, exactly
    top = query(
        db_url,
        """SELECT count(*) AS n FROM (
               SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips FROM (
                   SELECT *, row_number() OVER (PARTITION BY region_id
                       ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
                   FROM trip_clusters) r WHERE rn <= trip_cluster_top_size()
               EXCEPT SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips
               FROM trip_cluster_top) d""",
    )
    assert top[0]["n"] == 0


def test_jobs_with_overlapping_keys_store_exact_rollups(
    db_url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollups, "BUFFER_ROWS", 2000)  # spills and splits on small files
    monkeypatch.setattr(rollups, "SPLIT_BYTES", 100_000)
    small = settings.model_copy(update={"small_job_rows": 5000, "rollup_partition_rows": 5000})
    for seed, rows in ((1, 20_000), (2, 3000), (1, 20_000)):  # the third repeats the first
        p = tmp_path / f"t{seed}-{rows}.csv"
        if not p.exists():
            generate_file(p, rows, seed=seed)
        job = ingest(db_url, small, p, force=True)
        assert job["state"] == "succeeded", job["error"]
    _assert_exact(db_url)
    # the two large jobs' new keys went into partitions of their own, the small job's into p0
    for table in ("weekly_cell_trips", "trip_clusters"):
        parts = query(
            db_url,
            "SELECT part, count(*) AS n FROM " + table + " GROUP BY part ORDER BY part",  # noqa: S608
        )
        assert [r["part"] for r in parts][0] == 0 and len(parts) >= 2, (table, parts)


def test_grids_changed_during_a_job_fall_back_to_sql(
    db_url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "t.csv"
    generate_file(p, 4000, seed=3)
    real = loader._rollup_params

    def stale(ctl):  # what the job read before a `trips clusters --rebuild` changed the grid
        r = real(ctl)
        return rollups.Params(r.grid, r.cluster_cell * 2, r.bucket_minutes, r.top_size)

    monkeypatch.setattr(loader, "_rollup_params", stale)
    job = ingest(db_url, settings, p)
    assert job["state"] == "succeeded", job["error"]
    _assert_exact(db_url)


def test_a_small_job_into_a_large_store_probes_the_keys_and_stays_exact(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """A job's totals meet the stored keys by index probes when the store is much larger than
    the job, by one hash join over the store otherwise (db/migrations/018): both exact."""
    small = settings.model_copy(update={"small_job_rows": 1000, "rollup_partition_rows": 1000})
    for seed, rows in ((5, 40_000), (6, 1500), (5, 1500)):  # the last repeats keys of the first
        p = tmp_path / f"t{seed}-{rows}.csv"
        generate_file(p, rows, seed=seed)
        job = ingest(db_url, small, p, force=True)
        assert job["state"] == "succeeded", job["error"]
    _assert_exact(db_url)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM trip_clusters").fetchone()
        assert stored is not None
        conn.execute("CREATE TEMP TABLE few AS SELECT * FROM trip_clusters LIMIT 1500")
        conn.execute("CREATE TEMP TABLE all_keys AS SELECT * FROM trip_clusters")
        # a 1500-row job against the whole store: probing its keys is cheaper
        assert conn.execute("SELECT rollup_join_plan('trip_clusters', 'few')").fetchone() == (
            False,
        ), stored
        probing = conn.execute("SHOW enable_indexscan").fetchone()
        # as many keys as the store holds: one pass over the store is cheaper
        assert conn.execute("SELECT rollup_join_plan('trip_clusters', 'all_keys')").fetchone() == (
            True,
        )
        scanning = conn.execute("SHOW enable_indexscan").fetchone()
        assert (probing, scanning) == (("on",), ("off",))
