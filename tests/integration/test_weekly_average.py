"""Weekly averages equal a brute-force count for every kind of area and match (SPEC section 2)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from psycopg import sql

from benchmarks import oracle
from service.analytics import weekly
from service.api.app import create_app
from service.settings import Settings
from tests.helpers import ingest
from tests.integration.analytics_data import (
    CENTERS,
    Trip,
    brute_weekly,
    make_trips,
    write_csv,
)

MATCHES = ["origin", "destination", "both", "either"]
BOX_SQL = "SELECT week::text, trips FROM trips_weekly(ST_MakeEnvelope(%s, %s, %s, %s, 4326), %s)"
POLYGON_SQL = (
    "SELECT week::text, trips FROM trips_weekly(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326), %s)"
)


@pytest.fixture
def loaded(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, list[Trip]]]:
    """Two ingestions: one large (its own partition), one small (into trips_p0)."""
    first, second = make_trips(1, 1500), make_trips(2, 400)
    big = settings.model_copy(update={"small_job_rows": 0})
    assert ingest(db_url, big, write_csv(first, tmp_path / "a.csv"))["state"] == "succeeded"
    assert ingest(db_url, settings, write_csv(second, tmp_path / "b.csv"))["state"] == "succeeded"
    with TestClient(create_app(settings.model_copy(update={"worker_enabled": False}))) as c:
        yield c, first + second


def _coords(trips: list[Trip]) -> tuple[list[float], list[float]]:
    xs = sorted({v for t in trips for v in (t.ox, t.dx)})
    ys = sorted({v for t in trips for v in (t.oy, t.dy)})
    return xs, ys


def _edge(draw: st.DrawFn, values: list[float]) -> float:
    """A coordinate of the data, or a hair (one ulp) beside one."""
    v = draw(st.sampled_from(values))
    return draw(st.sampled_from([v, v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf)]))


@st.composite
def areas(draw: st.DrawFn, trips: list[Trip]) -> dict:
    xs, ys = _coords(trips)
    kind = draw(
        st.sampled_from(
            ["bbox", "polygon", "multipolygon", "region", "region+bbox", "triangle", "star"]
        )
    )
    region = draw(st.sampled_from(["Prague", "PRAGUE", "são paulo", "Zürich"]))
    x0, x1 = sorted([_edge(draw, xs), _edge(draw, xs)])
    y0, y1 = sorted([_edge(draw, ys), _edge(draw, ys)])
    if kind in ("polygon", "multipolygon", "triangle") and (x0 == x1 or y0 == y1):
        x1, y1 = x0 + 0.05, y0 + 0.05
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    area: dict = {"match": draw(st.sampled_from(MATCHES))}
    if kind in ("bbox", "region+bbox"):
        area["box"] = (x0, y0, x1, y1)
    if kind.startswith("region"):
        area["region"] = region
    if kind == "polygon":
        area["polygon"] = {"type": "Polygon", "coordinates": [ring]}
    if kind == "triangle":
        t = draw(st.sampled_from(trips))
        tri = [[x0, y0], [x1, y0], [t.ox, t.oy], [x0, y0]]
        if abs((x1 - x0) * (t.oy - y0)) < 1e-9:
            tri = [[x0, y0], [x1, y0], [x1, y1], [x0, y0]]
        area["polygon"] = {"type": "Polygon", "coordinates": [tri]}
    if kind == "star":  # concave: rows with several inside runs, edges through lattice points
        t = draw(st.sampled_from(trips))
        r, k = draw(st.sampled_from([0.015, 0.04, 0.1])), draw(st.integers(4, 7))
        radii = [r * (1.0 if j % 2 == 0 else 0.45) for j in range(2 * k)]
        star = [
            [round(t.ox + q * math.cos(math.pi * j / k), 3),
             round(t.oy + q * math.sin(math.pi * j / k), 3)]
            for j, q in enumerate(radii)
        ]  # fmt: skip
        assume(shapely.Polygon(star).is_valid)
        area["polygon"] = {"type": "Polygon", "coordinates": [star + star[:1]]}
    if kind == "multipolygon":
        fx0, fy0, fx1, fy1 = (8.54, 47.37, 8.7, 47.5) if x1 < 8.4 or x0 > 8.8 else (100, 0, 101, 1)
        far = [[fx0, fy0], [fx1, fy0], [fx1, fy1], [fx0, fy1], [fx0, fy0]]
        area["polygon"] = {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "MultiPolygon", "coordinates": [[ring], [far]]},
        }
    if draw(st.booleans()):
        area["start"], area["end"] = "2018-05-02", "2018-06-03"  # a Wednesday → whole weeks
    return area


def _ask(client: TestClient, area: dict) -> dict:
    params = {"match": area["match"]}
    if "region" in area:
        params["region"] = area["region"]
    if "start" in area:
        params |= {"from": area["start"], "to": area["end"]}
    if "polygon" in area:
        r = client.post("/stats/weekly-average", params=params, json=area["polygon"])
    else:
        if "box" in area:
            params["bbox"] = ",".join(repr(v) for v in area["box"])
        r = client.get("/stats/weekly-average", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _expected(trips: list[Trip], area: dict) -> dict:
    from datetime import date

    polygon = area.get("polygon")
    if polygon and polygon["type"] == "Feature":
        polygon = polygon["geometry"]
    return brute_weekly(
        trips,
        region=area.get("region"),
        box=area.get("box"),
        polygon=polygon,
        match=area["match"],
        start=date.fromisoformat(area["start"]) if "start" in area else None,
        end=date.fromisoformat(area["end"]) if "end" in area else None,
    )


def _check_against_brute_force(
    client: TestClient, trips: list[Trip], examples: int, strategy: Any = areas
) -> None:
    """`examples` areas generated by `strategy`, each answered by the API as the brute-force
    count says."""

    @hsettings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(area=strategy(trips))
    def check(area: dict) -> None:
        assert _ask(client, area) == _expected(trips, area)

    check()


def test_every_area_and_match_equals_brute_force(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    _check_against_brute_force(client, trips, 120)


@st.composite
def pair_boxes(draw: st.DrawFn, trips: list[Trip]) -> dict:
    """Boxes around a trip's origin, from a few hundredths of a degree to a region, edges on
    data coordinates or a hair beside them, for `both` and `either`, some with a region."""
    xs, ys = _coords(trips)
    t = draw(st.sampled_from(trips))
    half = draw(st.sampled_from([0.05, 0.08, 0.12, 0.2]))

    def side(values: list[float], c: float, sign: int) -> float:
        near = [v for v in values if half / 3 <= sign * (v - c) <= half]
        return _edge(draw, near) if near else c + sign * half

    x0, x1 = side(xs, t.ox, -1), side(xs, t.ox, 1)
    y0, y1 = side(ys, t.oy, -1), side(ys, t.oy, 1)
    area: dict = {"match": draw(st.sampled_from(["both", "either"])), "box": (x0, y0, x1, y1)}
    if draw(st.booleans()):
        area["region"] = draw(st.sampled_from(["Prague", "são paulo"]))
    if draw(st.booleans()):
        area["start"], area["end"] = "2018-05-02", "2018-06-03"
    return area


def test_boxes_around_trips_for_both_and_either(loaded: tuple[TestClient, list[Trip]]) -> None:
    """Boxes from a few hundredths of a degree to a region, their edges on the data, for `both`
    and `either`: the answers equal the brute-force count."""
    client, trips = loaded
    _check_against_brute_force(client, trips, 60, pair_boxes)


def test_both_and_either_each_way_equal_brute_force(
    loaded: tuple[TestClient, list[Trip]], db_url: str
) -> None:
    """`both` and `either` are answered one of two ways (trips_weekly_pair: the trips with both
    ends in the area, or the one-end count and the trips that start outside and end inside;
    trips.pair_way forces one): around each city, boxes and hexagons from a few hundredths of a
    degree to more than the city, some with trips that come in from outside, each way equals
    the brute-force count."""
    _, trips = loaded
    came_in = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        notes: list[str] = []
        conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        conn.execute("SET client_min_messages = debug1")
        for cx, cy in CENTERS.values():
            for half in (0.01, 0.05, 0.09, 0.11, 0.2):
                box = (cx - half, cy - half, cx + half, cy + half)
                ring = [
                    [cx + half * math.cos(k * math.pi / 3), cy + half * math.sin(k * math.pi / 3)]
                    for k in range(7)
                ]
                ring[-1] = ring[0]
                hexagon = {"type": "Polygon", "coordinates": [ring]}
                for area, q, args, shape in (
                    ({"box": box}, BOX_SQL, list(box), shapely.box(*box)),
                    (
                        {"polygon": hexagon},
                        POLYGON_SQL,
                        [json.dumps(hexagon)],
                        shapely.Polygon(ring),
                    ),
                ):
                    came_in += sum(
                        shape.covers(shapely.Point(t.dx, t.dy))
                        and not shape.covers(shapely.Point(t.ox, t.oy))
                        for t in trips
                    )
                    for way in ("direct", "outside"):
                        conn.execute("SELECT set_config('trips.pair_way', %s, false)", [way])
                        for match in ("both", "either"):
                            notes.clear()
                            rows = conn.execute(q, [*args, match]).fetchall()
                            want = _expected(trips, {"match": match, **area})["series"]
                            assert [{"week": w, "trips": n} for w, n in rows] == want
                            took = [n for n in notes if n.startswith("trips_weekly_pair:")]
                            assert took and took[0].split()[1] == way, notes
    assert came_in > 0


def test_every_area_through_the_origins_outside(
    loaded: tuple[TestClient, list[Trip]], settings: Settings, db_url: str
) -> None:
    """The property test's areas (holes, MultiPolygons, regions, windows, edges on the data)
    with `both` and `either` always answered through the origins outside the area."""
    _, trips = loaded
    with psycopg.connect(db_url, autocommit=True) as conn:
        db = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("ALTER DATABASE {} SET trips.pair_way = 'outside'").format(db))
        try:  # (the Citus pass keeps one database for every test: the setting is put back)
            with psycopg.connect(db_url) as fresh:  # what the API's new connections see
                assert fresh.execute("SHOW trips.pair_way").fetchone() == ("outside",)
            app = create_app(settings.model_copy(update={"worker_enabled": False}))
            with TestClient(app) as client:
                _check_against_brute_force(client, trips, 80)
        finally:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET trips.pair_way").format(db))


def test_psql_answers_what_the_api_answers(
    loaded: tuple[TestClient, list[Trip]], db_url: str
) -> None:
    """SPEC section 5: trips_weekly() called as a psql user would gives the API's series."""
    client, trips = loaded
    t = trips[7]
    box = (t.ox - 0.1, t.oy - 0.1, t.ox + 0.1, t.oy + 0.1)
    with psycopg.connect(db_url) as conn:
        for match in MATCHES:
            rows = conn.execute(
                "SELECT week::text, trips FROM trips_weekly("
                "ST_MakeEnvelope(%s, %s, %s, %s, 4326), %s)",
                [*box, match],
            ).fetchall()
            api = _ask(client, {"match": match, "box": box})
            assert [{"week": w, "trips": n} for w, n in rows] == api["series"]
            assert api == _expected(trips, {"match": match, "box": box})
        rows = conn.execute(
            "SELECT sum(trips) FROM trips_weekly(NULL, region => 'prague')"
        ).fetchone()
        assert rows == (sum(tr.region.lower() == "prague" for tr in trips),)


def test_a_polygon_reads_the_job_tables_cut_cells_index_only(
    loaded: tuple[TestClient, list[Trip]], db_url: str
) -> None:
    """A polygon's raw points in a large job's table are read index-only from its B-tree on the
    end's cell key, tested by _ST_Covers: no bitmap heap scan and no `point @ area` condition
    on the job's GiST, which reads every point in the area's bounds (the plans of the function's
    statements, by auto_explain)."""
    client, trips = loaded
    cx, cy = CENTERS["Prague"]
    ring = [
        [cx + r * math.cos(a * math.pi / 6), cy + r * math.sin(a * math.pi / 6)]
        for a, r in zip(range(12), [0.05, 0.03] * 6, strict=True)
    ]
    polygon = {"type": "Polygon", "coordinates": [ring + [ring[0]]]}
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            conn.execute("LOAD 'auto_explain'")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("auto_explain needs a superuser (DATABASE_URL's role is not one)")
        for name, value in [
            ("log_min_duration", "0"),
            ("log_nested_statements", "on"),
            ("log_level", "notice"),
        ]:
            conn.execute(
                sql.SQL("SET {} = {}").format(
                    sql.Identifier("auto_explain", name), sql.Literal(value)
                )
            )
        plans: list[str] = []
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        for match in ("origin", "destination"):
            plans.clear()
            rows = conn.execute(POLYGON_SQL, [json.dumps(polygon), match]).fetchall()
            series = [{"week": w, "trips": n} for w, n in rows]
            assert series == _expected(trips, {"match": match, "polygon": polygon})["series"]
            assert sum(n for _, n in rows) > 0
            job = [p for p in plans if "part <> 0" in p and "Index" in p]
            assert job, "\n".join(plans)
            assert any("Index Only Scan using trips_job_" in p for p in job), job
            assert all("Bitmap Heap Scan" not in p and f"({match} @" not in p for p in job), job


@pytest.mark.parametrize("cell,block", [(0.02, 10), (0.0075, 3)])
def test_other_summary_grids_equal_brute_force(
    settings: Settings, db_url: str, tmp_path: Path, cell: float, block: int
) -> None:
    """With a summary grid other than 0.005-degree cells in blocks of 5 (coarser, and one whose
    bounds are not round numbers), the answers are exact too."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE trip_grid SET cell = %s, block = %s", [cell, block])
    trips = make_trips(3, 900)
    big = settings.model_copy(update={"small_job_rows": 0})
    assert ingest(db_url, big, write_csv(trips, tmp_path / "c.csv"))["state"] == "succeeded"
    with TestClient(create_app(settings.model_copy(update={"worker_enabled": False}))) as client:
        _check_against_brute_force(client, trips, 40)


def test_fixed_cases(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    # Whole window: first week to last week of the store, the empty week a zero.
    whole = _ask(client, {"match": "origin", "box": (-180.0, -90.0, 180.0, 90.0)})
    assert whole["weeks"] == 7 and whole["from"] == "2018-04-30" and whole["to"] == "2018-06-11"
    assert whole["trips"] == len(trips)
    assert [s["trips"] for s in whole["series"]][3] == 0
    assert whole["weekly_average"] == len(trips) / 7
    # A box that is exactly one point of the data, and the same box one ulp away.
    t = trips[-2]
    exact = (t.ox, t.oy, t.ox, t.oy)
    for match in MATCHES:
        assert _ask(client, {"match": match, "box": exact}) == _expected(
            trips, {"match": match, "box": exact}
        )
    hair = (math.nextafter(t.ox, 99), t.oy, t.ox + 1, t.oy)
    got = _ask(client, {"match": "origin", "box": hair})
    assert got == _expected(trips, {"match": "origin", "box": hair})
    # Region alone, case-insensitively: "Prague" and "prague" are both matched.
    region = _ask(client, {"match": "origin", "region": "PRAGUE"})
    assert region["trips"] == sum(tr.region.lower() == "prague" for tr in trips)
    assert region == _expected(trips, {"match": "origin", "region": "PRAGUE"})


def test_cli_weekly_json(loaded: tuple[TestClient, list[Trip]], db_url: str) -> None:
    import orjson
    from typer.testing import CliRunner

    from service.cli import app

    client, trips = loaded
    res = CliRunner().invoke(
        app, ["weekly", "--region", "zürich", "--json"], env={"DATABASE_URL": db_url}
    )
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout) == _expected(trips, {"match": "origin", "region": "zürich"})
    res = CliRunner().invoke(app, ["weekly", "--region", "Atlantis"], env={"DATABASE_URL": db_url})
    assert res.exit_code == 1 and "Prague" in res.output


BAD_GET = [
    ({"bbox": "1,2,3"}, "4 numbers"),
    ({"bbox": "3,0,1,1"}, "greater than"),
    ({"bbox": "0,0,1,95"}, "latitude"),
    ({"bbox": "0,nan,1,1"}, "finite"),
    ({"bbox": "a,b,c,d"}, "4 numbers"),
    ({"bbox": "0,0,1,1", "match": "sideways"}, "match must be one of"),
    ({"bbox": "0,0,1,1", "from": "2018-13-01"}, "from must be a date"),
    ({"bbox": "0,0,1,1", "from": "2018-06-01", "to": "2018-05-01"}, "after"),
    ({}, "give a region"),
]
SQUARE = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
BAD_POST = [
    ({"type": "Point", "coordinates": [1, 2]}, "Polygon or MultiPolygon"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "invalid"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 95], [0, 0]]]}, "latitude"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}, "Polygon"),
    ({"type": "Feature", "properties": {}, "geometry": None}, "no geometry"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]}, ""),
    ([1, 2, 3], "GeoJSON"),
]


def test_bad_requests_are_422_never_500(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, _ = loaded
    for params, words in BAD_GET:
        r = client.get("/stats/weekly-average", params=params)
        assert r.status_code == 422 and words in r.json()["detail"], (params, r.text)
    for body, words in BAD_POST:
        r = client.post("/stats/weekly-average", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    r = client.post("/stats/weekly-average", content=b"{not json")
    assert r.status_code == 422 and "not JSON" in r.json()["detail"]
    r = client.post(
        "/stats/weekly-average",
        content=b'{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,NaN],[0,0]]]}',
    )
    assert r.status_code == 422
    r = client.get("/stats/weekly-average", params={"region": "Atlantis"})
    assert r.status_code == 404
    assert "Atlantis" in r.json()["detail"] and "São Paulo" in r.json()["detail"]
    r = client.post(
        "/stats/weekly-average",
        params={"region": "zürich", "match": "both"},
        json={"type": "Polygon", "coordinates": [SQUARE]},
    )
    assert r.status_code == 200 and r.json()["trips"] == 0


def test_store_oracle_agrees_and_can_disagree(
    loaded: tuple[TestClient, list[Trip]], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/oracle.py (the brute-force check of a whole store) finds no difference on the
    loaded store, over every kind of area it draws; and reports one when an answer is one trip
    off."""
    result = asyncio.run(oracle.check(db_url, 18, seed=3))
    assert result["mismatches"] == []
    assert result["answers_checked"] == 18 * 4
    assert result["trips_counted"] > 0
    assert set(result["areas_by_kind"]) == set(oracle.KINDS)

    real = weekly.weekly_average

    async def one_off(*args: object, **kwargs: object) -> dict:
        answer = await real(*args, **kwargs)  # type: ignore[arg-type]
        if kwargs["match"] == "both" and answer["series"]:
            answer["series"][-1]["trips"] += 1
        return answer

    monkeypatch.setattr(weekly, "weekly_average", one_off)
    wrong = asyncio.run(oracle.check(db_url, 8, seed=3))
    assert {m["match"] for m in wrong["mismatches"]} == {"both"}
    assert len(wrong["mismatches"]) == 8
