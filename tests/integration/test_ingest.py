"""Ingestion against a real PostGIS: exact counts, rejections, idempotency, atomicity."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import psycopg

from service.settings import Settings
from tests import citus_mode
from tests.helpers import ingest, query

HEADER = "region,origin_coord,destination_coord,datetime,datasource\n"


def test_sample_loads_with_exact_counts(db_url: str, settings: Settings, sample_csv: Path) -> None:
    with open(sample_csv, newline="") as f:
        expected = Counter(row["region"] for row in csv.DictReader(f))
    job = ingest(db_url, settings, sample_csv)
    assert job["state"] == "succeeded", job["error"]
    assert (job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (
        sum(expected.values()),
        sum(expected.values()),
        0,
    )
    got = query(
        db_url,
        """SELECT r.name, count(*) AS n FROM trips t
                           JOIN regions r ON r.id = t.region_id GROUP BY r.name""",
    )
    assert {r["name"]: r["n"] for r in got} == dict(expected)
    # the rollups agree with the trips
    weekly = query(db_url, "SELECT sum(trips) AS n FROM weekly_trips")[0]["n"]
    clusters = query(db_url, "SELECT sum(trips) AS n FROM trip_clusters")[0]["n"]
    assert weekly == clusters == sum(expected.values())


def test_values_are_stored_exactly(db_url: str, settings: Settings, tmp_path: Path) -> None:
    p = tmp_path / "one.csv"
    p.write_text(
        HEADER + "Prague,POINT (14.4973794438191 50.00136875782311),"
        "POINT(-0.5 -10.25),2018-05-28T09:03:41.25,funny_car\n"
    )
    assert ingest(db_url, settings, p)["state"] == "succeeded"
    row = query(
        db_url,
        """SELECT ST_X(origin) AS ox, ST_Y(origin) AS oy, ST_X(destination) AS dx,
                                  ST_Y(destination) AS dy, ST_SRID(origin) AS srid,
                                  started_at::text AS ts FROM trips""",
    )[0]
    assert (row["ox"], row["oy"], row["dx"], row["dy"]) == (
        14.4973794438191,
        50.00136875782311,
        -0.5,
        -10.25,
    )
    assert row["srid"] == 4326 and row["ts"] == "2018-05-28 09:03:41.25"


def _ingest_both_paths(db_url: str, settings: Settings, tmp_path: Path, lines: list[str]) -> None:
    """The lines (region R) as a small job, moved into trips_p0, then again as region S in a
    large job, its own partition."""
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_text(HEADER + "\n".join(lines) + "\n")
    large.write_text(HEADER + "\n".join(line.replace("R,", "S,") for line in lines) + "\n")
    assert ingest(db_url, settings, small)["state"] == "succeeded"
    big = settings.model_copy(update={"small_job_rows": 0})
    assert ingest(db_url, big, large)["state"] == "succeeded"


def test_cluster_nodes_are_st_snaptogrid_halfway_values_to_even(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """trip_clusters' nodes are where ST_SnapToGrid moves the points, named rint(x / cell) (SPEC
    section 2), for points exactly halfway between nodes, a hair beside, and negative ones,
    through both paths: a small job (moved into trips_p0) and a large one (its own partition).
    The tests' brute force (Python's round, to even) gives the same indexes."""
    values = ["0", "-0", "0.005", "-0.005", "0.015", "-0.015", "0.025", "1e-9", "90", "-90"]
    for k in range(-40, 41):
        for tail in ("", "0000001", "4999999"):
            values.append(f"{k * 0.01 + 0.005:.3f}{tail}")
    lines = [
        f"R,POINT ({a} {b}),POINT ({b} {a}),2018-01-01 00:{i % 60:02d}:00,x"
        for i, (a, b) in enumerate(zip(values, values[::-1], strict=True))
    ]
    _ingest_both_paths(db_url, settings, tmp_path, lines)
    snapped = query(
        db_url,
        """SELECT r.name AS region,
                  ST_X(ST_SnapToGrid(t.origin, p.cell)) AS sx, ST_X(t.origin) AS x,
                  ST_Y(ST_SnapToGrid(t.origin, p.cell)) AS sy, ST_Y(t.origin) AS y,
                  p.cell, t.tableoid::regclass::text AS part
           FROM trips t JOIN regions r ON r.id = t.region_id, trip_cluster_params p""",
    )
    assert {citus_mode.relation(r["part"]) for r in snapped} == {"trips_p0", "trips_job_2"}
    for r in snapped:  # the brute force of the tests is PostGIS's rounding
        assert (round(r["x"] / r["cell"]), round(r["y"] / r["cell"])) == (
            round(r["sx"] / r["cell"]),
            round(r["sy"] / r["cell"]),
        ), r
    stored = Counter(
        {
            (c["region"], c["ocx"], c["ocy"]): c["n"]
            for c in query(
                db_url,
                """SELECT r.name AS region, ocx, ocy, sum(trips) AS n FROM trip_clusters c
                   JOIN regions r ON r.id = c.region_id GROUP BY 1, 2, 3""",
            )
        }
    )
    expected = Counter(
        (r["region"], round(r["x"] / r["cell"]), round(r["y"] / r["cell"])) for r in snapped
    )
    assert stored == expected
    assert sum(stored.values()) == 2 * len(lines)


def test_cluster_buckets_at_their_bounds(db_url: str, settings: Settings, tmp_path: Path) -> None:
    """A trip's bucket is floor(seconds since midnight / (bucket_minutes * 60)) (SPEC section 2)
    at every bound of the day's hourly buckets: exactly on it, a microsecond before and after,
    through both paths (a small job in trips_p0, a large one in its own partition). The
    expected buckets are integer arithmetic on microseconds, no floating point."""
    times = [
        h * 3_600_000_000 + us
        for h in range(24)
        for us in (0, 1, 3_600_000_000 - 1, 1_800_000_000, 999_999)
    ]
    xs = [f"{10 + i * 0.05:.2f}" for i in range(len(times))]  # a cluster of its own per trip
    lines = []
    for i, (t, x) in enumerate(zip(times, xs, strict=True)):
        s, us = divmod(t, 1_000_000)
        stamp = f"2018-01-0{1 + i % 7} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{us:06d}"
        lines.append(f"R,POINT ({x} 1),POINT ({x} 2),{stamp},x")
    _ingest_both_paths(db_url, settings, tmp_path, lines)
    params = query(db_url, "SELECT cell, bucket_minutes FROM trip_cluster_params")[0]
    assert params["cell"] == 0.01, "the expected nodes take the default cell"
    expected = Counter(
        (region, round(float(x) / 0.01), t // (params["bucket_minutes"] * 60_000_000))
        for region in ("R", "S")
        for t, x in zip(times, xs, strict=True)
    )
    stored = Counter(
        {
            (c["region"], c["ocx"], c["bucket"]): c["trips"]
            for c in query(
                db_url,
                """SELECT r.name AS region, c.ocx, c.bucket, c.trips FROM trip_clusters c
                   JOIN regions r ON r.id = c.region_id""",
            )
        }
    )
    assert stored == expected


def test_rejections_recorded_with_line_numbers(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    good = "Turin,POINT (7.6 45.0),POINT (7.7 45.1),2018-05-21 02:54:04,baba_car\n"
    p = tmp_path / "mixed.csv"
    p.write_text(
        HEADER
        + good
        + "Turin,POINT (7.6 95),POINT (7.7 45.1),2018-05-21 02:54:04,b\n"
        + good
        + ",POINT (7.6 45),POINT (7.7 45.1),2018-05-21 02:54:04,b\n"
        + good
    )
    job = ingest(db_url, settings, p)
    assert (job["state"], job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (
        "succeeded",
        5,
        3,
        2,
    )
    rej = query(db_url, "SELECT line, reason FROM ingestion_rejections ORDER BY line")
    assert [(r["line"], r["reason"]) for r in rej] == [
        (3, "origin_coord: latitude 95.0 outside [-90, 90]"),
        (5, "region is empty"),
    ]
    assert query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"] == 3


def test_same_bytes_stored_once_unless_forced(
    db_url: str, settings: Settings, sample_csv: Path
) -> None:
    first = ingest(db_url, settings, sample_csv)
    again = ingest(db_url, settings, sample_csv)
    assert again["id"] == first["id"]
    assert query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"] == 100
    forced = ingest(db_url, settings, sample_csv, force=True)
    assert forced["id"] != first["id"] and forced["state"] == "succeeded"
    assert query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"] == 200


def test_bad_header_fails_whole_file_and_stores_nothing(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("region,origin,destination\nA,B,C\n")
    job = ingest(db_url, settings, p)
    assert job["state"] == "failed" and "lacks column" in job["error"]
    assert query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"] == 0
    assert query(db_url, "SELECT count(*) AS n FROM ingestion_rejections")[0]["n"] == 0


def test_large_job_gets_its_own_partition(db_url: str, settings: Settings, tmp_path: Path) -> None:
    from service.generate import generate_file

    p = tmp_path / "big.csv"
    generate_file(p, 3000, seed=1)
    small = settings.model_copy(update={"small_job_rows": 1000})
    job = ingest(db_url, small, p)
    assert job["state"] == "succeeded" and job["rows_loaded"] == 3000
    parts = query(
        db_url,
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c
                             ON c.oid = i.inhrelid WHERE i.inhparent = 'trips'::regclass
                             ORDER BY 1""",
    )
    assert [r["relname"] for r in parts] == [f"trips_job_{job['id']}", "trips_p0"]
    # the partition's indexes were adopted by the parent's partitioned indexes
    idx = query(
        db_url,
        """SELECT count(*) AS n FROM pg_inherits i JOIN pg_class c
                           ON c.oid = i.inhrelid WHERE c.relname LIKE %s""",
        [f"trips_job_{job['id']}_%"],
    )
    assert idx[0]["n"] == 4
    # and none was built a second time by the attach (a definition that differs from the parent's);
    # beside them, the job's own B-trees on its ends' summary cells, for index-only raw reads
    own = query(
        db_url,
        "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = %s::regclass",
        [f"trips_job_{job['id']}"],
    )
    names = sorted(r["name"].removeprefix(f"trips_job_{job['id']}_") for r in own)
    assert names == ["dcell", "destination", "id", "ocell", "origin", "started_at"]
    # every partition has GiST on both ends (the user's shape: points with GiST indexes)
    gist = query(
        db_url,
        """SELECT c.relname AS part, array_agg(a.attname ORDER BY a.attname) AS cols
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_index x ON x.indrelid = c.oid
           JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(x.indkey)
           WHERE i.inhparent = 'trips'::regclass AND am.amname = 'gist'
           GROUP BY 1 ORDER BY 1""",
    )
    assert [(r["part"], r["cols"]) for r in gist] == [
        (f"trips_job_{job['id']}", ["destination", "origin"]),
        ("trips_p0", ["destination", "origin"]),
    ]
    with psycopg.connect(db_url) as conn:
        n = conn.execute(
            "SELECT count(*) FROM trips WHERE ST_X(origin) BETWEEN -180 AND 180"
        ).fetchone()
    assert n == (3000,)
