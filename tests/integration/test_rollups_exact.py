"""The rollups a job stores (client-side totals, migration 013) equal what SQL computes from the
stored trips, over several jobs whose keys overlap, and through the server-side fallback taken
when the grids change under a running job."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from service.analytics import clusters
from service.generate import generate_file
from service.ingest import loader, rollups, worker
from service.settings import Settings
from tests.helpers import cluster_sizes, ingest, query
from tests.integration.analytics_data import Trip, write_csv

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
    # a cell key lives in one partition of its rollup only (db/migrations/017); cluster totals
    # are one row per key and partition (025: a key may be in several)
    for table, key in (
        ("weekly_cell_trips", "side, cx, cy, week, region_id"),
        ("trip_cluster_parts", "region_id, ocx, ocy, dcx, dcy, bucket, part"),
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
    # the known clusters' totals are exact, and every other cluster has at most its region's
    # bound, every known one more (db/migrations/025)
    known = query(
        db_url,
        """SELECT count(*) FILTER (WHERE k.trips IS DISTINCT FROM c.trips) AS wrong,
                  count(*) FILTER (WHERE k.trips IS NULL AND c.trips > coalesce(b.bound, 0))
                      AS above_bound,
                  count(*) FILTER (WHERE k.trips <= coalesce(b.bound, 0)) AS below_bound
           FROM trip_clusters c
           LEFT JOIN trip_cluster_known k USING (region_id, ocx, ocy, dcx, dcy, bucket)
           LEFT JOIN trip_cluster_bound b USING (region_id)
           WHERE k.trips IS NOT NULL OR c.trips > coalesce(b.bound, 0)""",
    )[0]
    assert known == {"wrong": 0, "above_bound": 0, "below_bound": 0}, known


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
    for table in ("weekly_cell_trips", "trip_cluster_parts"):
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
        return rollups.Params(r.grid, r.cluster_cell * 2, r.bucket_minutes)

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
        plan = "SELECT rollup_join_plan('trip_cluster_parts', %s)"
        assert conn.execute(plan, ["few"]).fetchone() == (False,), stored
        probing = conn.execute("SHOW enable_indexscan").fetchone()
        # as many keys as the store holds: one pass over the store is cheaper
        assert conn.execute(plan, ["all_keys"]).fetchone() == (True,)
        scanning = conn.execute("SHOW enable_indexscan").fetchone()
        assert (probing, scanning) == (("on",), ("off",))


def _clusters_file(path: Path, counts: dict[str, int]) -> Path:
    """A CSV with `counts[c]` trips of each cluster c of "uvwxyz": its origin in cell
    (1440 + "uvwxyz".index(c), 5000), its destination in cell (1450, 5010), Prague, 08:xx."""
    trips = [
        Trip(
            "Prague",
            14.405 + "uvwxyz".index(c) * 0.01,
            50.005 + k * 1e-6,
            14.505,
            50.105,
            datetime(2018, 5, 28, 8, k % 60),
            "funny_car",
        )  # fmt: skip
        for c, n in counts.items()
        for k in range(n)
    ]
    return write_csv(trips, path)


@pytest.mark.parametrize("own_partition", [False, True], ids=["partition-0", "own-partition"])
@pytest.mark.parametrize("known,admit", [(3, 1), (2, 0), (50, 50)])
def test_the_top_takes_a_stored_cluster_the_job_did_not_rank_first(
    db_url: str, settings: Settings, tmp_path: Path, own_partition: bool, known: int, admit: int
) -> None:
    """A top of N = 2 (db/migrations/025): the second job gives cluster z only 3 trips, fewer
    than its own first two (w 5, v 4), but z's 8 earlier trips make 11, the region's first;
    then a third job whose top clusters grow more than z can, which stays out. Whatever the
    known clusters and admissions per job."""
    cluster_sizes(db_url, 2, known, admit)
    rows = 0 if own_partition else 1_000_000
    s = settings.model_copy(update={"small_job_rows": rows, "rollup_partition_rows": rows})
    jobs = [
        {"x": 10, "y": 9, "z": 8},
        {"w": 5, "v": 4, "z": 3},
        {"x": 5, "y": 5, "z": 2, "u": 1},
    ]
    tops = []
    for i, counts in enumerate(jobs):
        job = ingest(db_url, s, _clusters_file(tmp_path / f"j{i}.csv", counts))
        assert job["state"] == "succeeded", job["error"]
        _assert_exact(db_url)
        top = query(db_url, "SELECT ocx, trips FROM trip_cluster_top ORDER BY trips DESC, ocx")
        tops.append([(r["ocx"] - 1440, r["trips"]) for r in top])
    assert tops == [[(3, 10), (4, 9)], [(5, 11), (3, 10)], [(3, 15), (4, 14)]]
    parts = query(db_url, "SELECT count(DISTINCT part) AS n FROM trip_cluster_parts")[0]["n"]
    assert parts == (3 if own_partition else 1)


def test_a_full_top_stays_exact_over_jobs_and_a_compaction(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """Generated jobs, large and small, some repeating others' keys, against tops of 5 clusters
    per region, 40 known and 10 admitted per job: the top and the summed totals stay exact;
    compacting folds the partitions and changes no total."""
    cluster_sizes(db_url, 5, 40, 10)
    small = settings.model_copy(update={"small_job_rows": 5000, "rollup_partition_rows": 5000})
    for seed, rows in ((1, 20_000), (2, 3000), (1, 20_000), (3, 8000)):
        p = tmp_path / f"t{seed}-{rows}.csv"
        if not p.exists():
            generate_file(p, rows, seed=seed)
        job = ingest(db_url, small, p, force=True)
        assert job["state"] == "succeeded", job["error"]
        _assert_exact(db_url)
    dup = """SELECT count(*) AS n FROM (SELECT 1 FROM trip_cluster_parts
             GROUP BY region_id, ocx, ocy, dcx, dcy, bucket HAVING count(*) > 1) d"""
    assert query(db_url, dup)[0]["n"] > 0  # keys stored by several jobs, not merged in place
    bounds = query(db_url, "SELECT min(bound) AS lo, count(*) AS n FROM trip_cluster_bound")[0]
    assert bounds["lo"] > 0 and bounds["n"] == 5  # every region has clusters that are not known
    before = query(db_url, "SELECT count(*) AS n, sum(trips) AS t FROM trip_clusters")[0]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert clusters.partitions(conn) == 4
        assert clusters.compact(conn) == 4
        assert clusters.partitions(conn) == 1
        assert clusters.compact(conn) == 0
    assert query(db_url, "SELECT count(*) AS n, sum(trips) AS t FROM trip_clusters")[0] == before
    assert query(db_url, dup)[0]["n"] == 0
    _assert_exact(db_url)
    # and the next jobs go on from the compacted store
    job = ingest(db_url, small, tmp_path / "t2-3000.csv", force=True)
    assert job["state"] == "succeeded", job["error"]
    _assert_exact(db_url)


def test_an_idle_worker_compacts_past_the_setting(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(
        update={"small_job_rows": 0, "rollup_partition_rows": 0, "cluster_compact_parts": 2}
    )
    for i in range(3):
        job = ingest(db_url, s, _clusters_file(tmp_path / f"j{i}.csv", {"x": i + 1, "y": 2}))
        assert job["state"] == "succeeded", job["error"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert clusters.partitions(conn) == 4  # partition 0 and three jobs'
        assert worker.compact_when_due(conn, s) == 4
        assert worker.compact_when_due(conn, s) == 0
        assert clusters.partitions(conn) == 1
    _assert_exact(db_url)


@pytest.mark.parametrize("own_partition", [False, True], ids=["partition-0", "own-partition"])
def test_an_admitted_cluster_gets_its_stored_trips(
    db_url: str, settings: Settings, tmp_path: Path, own_partition: bool
) -> None:
    """N = 1, one admission per job (025). Job 1 into the empty store: x (10) is admitted with
    its job count, y (6), z (5), w (3) stay unknown under the bound 6. Job 2: y 5 more, v 1; y
    is admitted, and its total is looked up: 11, the region's first, not 5."""
    cluster_sizes(db_url, 1, 2, 1)
    rows = 0 if own_partition else 1_000_000
    s = settings.model_copy(update={"small_job_rows": rows, "rollup_partition_rows": rows})
    seen = []
    for i, counts in enumerate(({"x": 10, "y": 6, "z": 5, "w": 3}, {"y": 5, "v": 1})):
        job = ingest(db_url, s, _clusters_file(tmp_path / f"j{i}.csv", counts))
        assert job["state"] == "succeeded", job["error"]
        _assert_exact(db_url)
        known = query(db_url, "SELECT ocx - 1440 AS c, trips FROM trip_cluster_known ORDER BY 1")
        bound = query(db_url, "SELECT bound FROM trip_cluster_bound")
        top = query(db_url, "SELECT ocx - 1440 AS c, trips FROM trip_cluster_top")
        seen.append(([tuple(r.values()) for r in known], bound[0]["bound"], top[0]["c"]))
    x, y = "uvwxyz".index("x"), "uvwxyz".index("y")
    assert seen == [([(x, 10)], 6, x), ([(x, 10), (y, 11)], 7, y)]
