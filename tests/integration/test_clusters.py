"""Clusters equal a brute-force grouping in Python (SPEC section 2), through GET /clusters."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import mapbox_vector_tile
import psycopg
import pytest
from fastapi.testclient import TestClient
from geojson_pydantic import FeatureCollection
from typer.testing import CliRunner

from service.analytics import tiles
from service.analytics.clusters import bucket_label
from service.api.app import create_app
from service.settings import Settings
from tests import citus_mode
from tests.helpers import ingest, query
from tests.integration.analytics_data import Trip, brute_clusters, make_trips, write_csv


def _spread(seed: int, n: int) -> list[Trip]:
    """Many distinct clusters in one region: more than the per-region top list holds."""
    rng = random.Random(seed)
    base = datetime(2018, 5, 7)
    return [
        Trip(
            "Montréal",
            -73.6 + rng.uniform(0, 0.4),
            45.4 + rng.uniform(0, 0.2),
            -73.6 + rng.uniform(0, 0.4),
            45.4 + rng.uniform(0, 0.2),
            base + timedelta(seconds=rng.randrange(86400 * 7)),
            "funny_car",
        )
        for _ in range(n)
    ]


@pytest.fixture
def loaded(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, list[Trip]]]:
    yield from _load(settings, db_url, tmp_path)


def _load(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, list[Trip]]]:
    first = make_trips(3, 1200) + _spread(4, 1500)
    second = make_trips(5, 600) + _spread(6, 600) + make_trips(3, 300)  # repeats: upserts
    big = settings.model_copy(update={"small_job_rows": 0})
    assert ingest(db_url, big, write_csv(first, tmp_path / "a.csv"))["state"] == "succeeded"
    assert ingest(db_url, settings, write_csv(second, tmp_path / "b.csv"))["state"] == "succeeded"
    with TestClient(create_app(settings.model_copy(update={"worker_enabled": False}))) as c:
        yield c, first + second


def _expected(trips: list[Trip], cell: float = 0.01, minutes: int = 60, **f: object) -> list:
    rows = []
    for (region, ocx, ocy, dcx, dcy, b), (n, sox, soy, sdx, sdy) in brute_clusters(
        trips, cell, minutes
    ).items():
        mx, my = sox / n, soy / n
        if f.get("region") and region.lower() != str(f["region"]).lower():
            continue
        if n < int(f.get("min_trips", 1)):  # type: ignore[call-overload]
            continue
        box = f.get("bbox")
        if box and not (box[0] <= mx <= box[2] and box[1] <= my <= box[3]):  # type: ignore[index]
            continue
        if "buckets" in f and b not in f["buckets"]:  # type: ignore[operator]
            continue
        rows.append(
            (
                n,
                region,
                (ocx, ocy),
                (dcx, dcy),
                bucket_label(b, minutes),
                (mx, my, sdx / n, sdy / n),
            )
        )
    rows.sort(key=lambda r: -r[0])
    return rows


def _got(client: TestClient, **params: object) -> list:
    r = client.get("/clusters", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/geo+json")
    fc = FeatureCollection.model_validate(r.json())
    out = []
    for feat in r.json()["features"]:
        p = feat["properties"]
        (ox, oy), (dx, dy) = feat["geometry"]["coordinates"]
        out.append(
            (
                p["trips"],
                p["region"],
                tuple(p["origin_cell"]),
                tuple(p["destination_cell"]),
                p["time_bucket"],
                (ox, oy, dx, dy),
            )
        )
    assert len(out) == len(fc.features)
    return out


def _same(got: list, expected: list, limit: int) -> None:
    """Same counts in order; the same clusters wherever the count is not tied at the cut."""
    assert [g[0] for g in got] == [e[0] for e in expected[:limit]]
    cut = got[-1][0] if len(got) == limit else 0
    exp = {e[1:5]: e for e in expected if e[0] > cut}
    for g in got:
        if g[0] > cut:
            e = exp.pop(g[1:5])
            assert g[5] == pytest.approx(e[5], abs=1e-9)
    assert not exp


def test_clusters_equal_brute_force(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    _same(_got(client, limit=1000), _expected(trips), 1000)
    _same(_got(client, region="montréal", limit=7), _expected(trips, region="Montréal"), 7)
    _same(_got(client, region="PRAGUE", limit=50), _expected(trips, region="prague"), 50)
    # Filters that leave too few matches in the top list: answered from the full table.
    box = (-73.5, 45.45, -73.3, 45.55)
    _same(
        _got(client, region="Montréal", bbox=",".join(map(str, box)), limit=1000),
        _expected(trips, region="Montréal", bbox=box),
        1000,
    )
    _same(
        _got(client, time_from="08:00", time_to="10:30", min_trips=2, limit=1000),
        _expected(trips, buckets={8, 9, 10}, min_trips=2),
        1000,
    )
    _same(_got(client, min_trips=3, limit=5), _expected(trips, min_trips=3), 5)


def test_top_100_of_a_region_in_psql_reads_the_index(
    loaded: tuple[TestClient, list[Trip]], db_url: str
) -> None:
    """The psql user's question, "the top 100 clusters of a region", is an index scan of
    trip_clusters (region_id, trips DESC), not a read of every cluster of the region."""
    client, trips = loaded
    q = """SELECT c.* FROM trip_clusters c JOIN regions r ON r.id = c.region_id
           WHERE r.name = 'Montréal' ORDER BY c.trips DESC LIMIT 100"""
    with psycopg.connect(db_url) as conn:
        conn.execute("ANALYZE trip_clusters")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + q))
        rows = conn.execute(q).fetchall()
    if not citus_mode.ON:  # on Citus the plan shown is of one shard's task, perhaps empty
        assert "trip_clusters_region_trips" in plan, plan
    expected = _expected(trips, region="Montréal")
    assert [r[6] for r in rows] == [e[0] for e in expected[:100]]


def test_rebuild_with_new_parameters(loaded: tuple[TestClient, list[Trip]], db_url: str) -> None:
    from service.cli import app

    client, trips = loaded
    env = {
        "DATABASE_URL": db_url,
        "TRIPS_CLUSTER_CELL": "0.05",
        "TRIPS_CLUSTER_BUCKET_MINUTES": "30",
    }
    res = CliRunner().invoke(app, ["clusters", "--region", "Zürich", "--limit", "3"], env=env)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, ["clusters", "--rebuild", "--geojson", "--limit", "1000"], env=env
    )
    assert res.exit_code == 0, res.output
    _same(_got(client, limit=1000), _expected(trips, 0.05, 30), 1000)
    # the rebuild refreshed the copy: every region holds fewer than 5,000 clusters, so all of them
    tops = query(
        db_url,
        "SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips"
        " FROM trip_cluster_tops ORDER BY 1, 2, 3, 4, 5, 6",
    )
    every = query(
        db_url,
        "SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips"
        " FROM trip_clusters ORDER BY 1, 2, 3, 4, 5, 6",
    )
    assert tops and tops == every
    assert client.get("/clusters").json()["params"] == {"cell": 0.05, "bucket_minutes": 30}
    # A limit above the maximum is capped, as in the API; below 1 is an error.
    capped = CliRunner().invoke(app, ["clusters", "--geojson", "--limit", "5000"], env=env)
    at_max = CliRunner().invoke(app, ["clusters", "--geojson", "--limit", "1000"], env=env)
    assert capped.exit_code == 0 and at_max.exit_code == 0, capped.output
    assert json.loads(capped.stdout)["features"] == json.loads(at_max.stdout)["features"]
    assert CliRunner().invoke(app, ["clusters", "--limit", "0"], env=env).exit_code != 0


def test_bad_cluster_requests(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, _ = loaded
    for params in (
        {"bbox": "1,2"},
        {"time_from": "25:00"},
        {"time_from": "10:00", "time_to": "09:00"},
        {"min_trips": 0},
        {"limit": "x"},
    ):
        assert client.get("/clusters", params=params).status_code == 422, params
    r = client.get("/clusters", params={"region": "Atlantis"})
    assert r.status_code == 404 and "Zürich" in r.json()["detail"]


def test_cluster_tops_are_each_regions_first_clusters(
    loaded: tuple[TestClient, list[Trip]], db_url: str
) -> None:
    """trip_cluster_tops (the map's low-zoom cluster tiles) holds each region's first 5,000
    clusters in the order of trip_clusters_top after the ingestions (a rebuild: see
    test_rebuild_with_new_parameters)."""
    _, trips = loaded
    brute = brute_clusters(trips, 0.01, 60)
    expected: dict[str, list] = {}
    for (region, *key), (n, *_) in brute.items():
        expected.setdefault(region.lower(), []).append((-n, *key))
    q = """SELECT lower(r.name), t.ocx, t.ocy, t.dcx, t.dcy, t.bucket, t.trips
           FROM trip_cluster_tops t JOIN regions r ON r.id = t.region_id"""
    rows = query(db_url, q)
    got: dict[str, list] = {}
    for r in rows:
        got.setdefault(r["lower"], []).append(
            (-r["trips"], r["ocx"], r["ocy"], r["dcx"], r["dcy"], r["bucket"])
        )
    assert got.keys() == expected.keys()
    for region, want in expected.items():
        assert sorted(got[region]) == sorted(want)[:5000], region


def test_cluster_tile_zoomed_in_holds_the_clusters_of_its_nodes(
    loaded: tuple[TestClient, list[Trip]],
) -> None:
    """From the exact zoom a cluster tile holds every cluster whose origin node lies in the tile
    (widened by a node) and whose line meets the tile's buffered square: checked against the
    brute-force clusters whose mean origin is well inside the tile."""
    client, trips = loaded
    brute = brute_clusters(trips, 0.01, 60)
    top = max(brute.values(), key=lambda v: v[0])
    lon, lat = top[1] / top[0], top[2] / top[0]  # the busiest cluster's mean origin
    z = tiles.TOP_ZOOM
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    x0, x1 = x / n * 360 - 180, (x + 1) / n * 360 - 180
    y1 = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
    y0 = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + 1) / n))))
    inner = [
        k
        for k, (c, sox, soy, *_) in brute.items()
        if x0 + 1e-4 < sox / c < x1 - 1e-4 and y0 + 1e-4 < soy / c < y1 - 1e-4
    ]
    assert inner, "the test data should put clusters in the tile"
    r = client.get(f"/collections/clusters/tiles/WebMercatorQuad/{z}/{y}/{x}")
    assert r.status_code == 200
    feats = mapbox_vector_tile.decode(r.content)["clusters"]["features"]
    assert len(feats) >= len(inner)
    assert sum(f["properties"]["trips"] for f in feats) >= sum(brute[k][0] for k in inner)


def test_top_from_the_copy_or_the_table(loaded: tuple[TestClient, list[Trip]], db_url: str) -> None:
    """GET /clusters answers from trip_cluster_tops when the copy holds the answer and from
    trip_clusters when it does not: with a copy of 40 clusters per region, both paths are taken
    and every answer still equals the brute force."""
    client, trips = loaded
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE trip_cluster_params SET tops = 40")
        conn.execute("SELECT trip_cluster_tops_refresh()")
        held = conn.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM trip_cluster_tops GROUP BY region_id) s"
        ).fetchone()
    assert held == (40,)
    _same(_got(client, limit=30), _expected(trips), 30)  # the copy
    _same(_got(client, limit=100), _expected(trips), 100)  # more than the copy: the table
    _same(
        _got(client, region="Montréal", min_trips=2, limit=25),
        _expected(trips, region="Montréal", min_trips=2),
        25,
    )
    box = (-73.5, 45.45, -73.3, 45.55)  # few of the copy's clusters in it: the table
    _same(
        _got(client, region="Montréal", bbox=",".join(map(str, box)), limit=20),
        _expected(trips, region="Montréal", bbox=box),
        20,
    )
    _same(
        _got(client, time_from="08:00", time_to="10:30", limit=10),
        _expected(trips, buckets={8, 9, 10}),
        10,
    )
