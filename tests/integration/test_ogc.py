"""OGC API – Features and Tiles (SPEC section 4, "For GIS tools and browsers"), against brute
force in Python (shapely) on the same inserted trips: bbox exactness (lines that cross a box with
both ends outside, ends on an edge, degenerate boxes), datetime, paging, tiles, and GDAL's OAPIF
driver against a real server when ogrinfo is installed."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import LineString, Point, box

from service.api.app import create_app
from service.settings import Settings
from tests.helpers import ingest, query
from tests.integration.analytics_data import Trip, make_trips, write_csv

T = datetime(2018, 5, 9, 12, 0)
SPECIAL = [
    Trip("Prague", 14.30, 50.20, 14.60, 50.40, T, "funny_car"),  # crosses B, both ends outside
    Trip("Prague", 14.38, 50.30, 14.44, 50.20, T, "funny_car"),  # crosses B's west edge
    Trip("Prague", 14.40, 50.27, 14.35, 50.27, T, "funny_car"),  # an end on B's west edge
    Trip("Prague", 14.38, 50.24, 14.3999999, 50.36, T, "funny_car"),  # passes just west of B
    Trip("Zürich", 8.54, 47.37, 14.60, 50.50, T, "baba_car"),  # long: crosses C far from its ends
    Trip("Prague", 14.45, 50.30, 14.45, 50.30, T, "cheap_mobile"),  # zero length, inside B
]
B = (14.40, 50.25, 14.50, 50.35)
C = (11.5, 48.9, 11.6, 49.0)
BOXES = [
    B,
    C,
    (14.40, 50.27, 14.40, 50.27),  # a point: the end on the edge
    (14.45, 50.0, 14.45, 50.5),  # zero width
    (14.42, 50.08, 14.45, 50.10),  # lattice values: many ends exactly on the edges
    (-47.0, -24.0, -46.5, -23.0),
    (-180.0, -90.0, 180.0, 90.0),
    (0.0, 0.0, 1.0, 1.0),  # nothing
]


def _key(f: dict[str, Any]) -> tuple:
    (ox, oy), (dx, dy) = f["geometry"]["coordinates"]
    return (ox, oy, dx, dy, datetime.fromisoformat(f["properties"]["datetime"]))


def _tkey(t: Trip) -> tuple:
    return (t.ox, t.oy, t.dx, t.dy, t.at)


def _area(b: tuple[float, float, float, float]) -> Any:
    if b[0] == b[2] and b[1] == b[3]:
        return Point(b[0], b[1])
    if b[0] == b[2] or b[1] == b[3]:
        return LineString([(b[0], b[1]), (b[2], b[3])])
    return box(*b)


def line(o: tuple[float, float], d: tuple[float, float]) -> Any:
    """A line origin → destination; a zero-length one as the point it is (GEOS misjudges a
    degenerate LineString against a line: a point on a segment does not meet it, it says)."""
    return Point(o) if tuple(o) == tuple(d) else LineString([o, d])


def brute_bbox(trips: list[Trip], b: tuple[float, float, float, float]) -> Counter:
    area = _area(b)
    return Counter(_tkey(t) for t in trips if line((t.ox, t.oy), (t.dx, t.dy)).intersects(area))


@pytest.fixture
def loaded(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, list[Trip]]]:
    trips = make_trips(11, 400) + SPECIAL
    assert ingest(db_url, settings, write_csv(trips, tmp_path / "a.csv"))["state"] == "succeeded"
    with TestClient(create_app(settings.model_copy(update={"worker_enabled": False}))) as c:
        yield c, trips


def pages(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every feature, following `next` links; each page checked."""
    out: list[dict[str, Any]] = []
    r = client.get(path, params=params)
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        body = r.json()
        assert body["type"] == "FeatureCollection"
        assert body["numberReturned"] == len(body["features"])
        assert len(body["features"]) <= int(params.get("limit", 10))
        out += body["features"]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        if not nxt:
            return out
        r = client.get(nxt[0])


def test_landing_conformance_collections(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    land = client.get("/")
    assert land.status_code == 200 and land.headers["content-type"] == "application/json"
    rels = {link["rel"] for link in land.json()["links"]}
    assert {"self", "service-desc", "service-doc", "conformance", "data"} <= rels
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.headers["content-type"].startswith("text/html") and "maplibre" in page.text
    assert client.get("/?f=html").headers["content-type"].startswith("text/html")
    assert client.get("/", headers={"Accept": "application/json"}).json()["links"]
    conf = client.get("/conformance").json()["conformsTo"]
    for c in ("core", "geojson", "oas30"):
        assert f"http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/{c}" in conf
    cols = {c["id"]: c for c in client.get("/collections").json()["collections"]}
    assert set(cols) == {"trips", "clusters"}
    xs = [x for t in trips for x in (t.ox, t.dx)]
    ys = [y for t in trips for y in (t.oy, t.dy)]
    assert cols["trips"]["extent"]["spatial"]["bbox"] == [[min(xs), min(ys), max(xs), max(ys)]]
    first, last = min(t.at for t in trips), max(t.at for t in trips)
    interval = cols["trips"]["extent"]["temporal"]["interval"][0]
    assert [datetime.fromisoformat(s) for s in interval] == [first, last]
    one = client.get("/collections/clusters").json()
    assert one["id"] == "clusters" and any(link["rel"] == "items" for link in one["links"])
    missing = client.get("/collections/nope")
    assert missing.status_code == 404 and "detail" in missing.json()
    assert client.get("/openapi.json").status_code == 200


def test_bbox_is_exact(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    everything = pages(client, "/collections/trips/items", limit=10000)
    assert Counter(map(_key, everything)) == Counter(map(_tkey, trips))
    for b in BOXES:
        got = pages(client, "/collections/trips/items", bbox=",".join(map(repr, b)), limit=37)
        assert Counter(map(_key, got)) == brute_bbox(trips, b), b
    crossing = brute_bbox(trips, B)
    assert _tkey(SPECIAL[0]) in crossing and _tkey(SPECIAL[2]) in crossing
    assert _tkey(SPECIAL[3]) not in crossing
    assert _tkey(SPECIAL[4]) in brute_bbox(trips, C)
    # the 3D form: heights ignored
    got = pages(client, "/collections/trips/items", bbox="14.4,50.25,0,14.5,50.35,10", limit=50)
    assert Counter(map(_key, got)) == crossing


def test_clusters_bbox_and_paging(loaded: tuple[TestClient, list[Trip]], db_url: str) -> None:
    client, trips = loaded
    total = query(db_url, "SELECT count(*) AS n FROM trip_clusters")[0]["n"]
    feats = pages(client, "/collections/clusters/items", limit=13)
    ids = [f["id"] for f in feats]
    assert len(ids) == len(set(ids)) == total
    assert sum(f["properties"]["trips"] for f in feats) == len(trips)
    for b in BOXES:
        area = _area(b)
        want = {f["id"] for f in feats if line(*f["geometry"]["coordinates"]).intersects(area)}
        got = pages(client, "/collections/clusters/items", bbox=",".join(map(repr, b)), limit=9)
        assert {f["id"] for f in got} == want, b
    one = client.get(f"/collections/clusters/items/{ids[0]}")
    assert one.status_code == 200 and one.json()["id"] == ids[0]


def test_datetime_filter(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    d = datetime

    def between(a: datetime | None, b: datetime | None) -> Counter:
        return Counter(
            _tkey(t) for t in trips if (a is None or t.at >= a) and (b is None or t.at < b)
        )

    cases = {
        "2018-04-30T00:00:00Z": between(d(2018, 4, 30), d(2018, 4, 30, 0, 0, 0, 1)),
        "2018-05-01": between(d(2018, 5, 1), d(2018, 5, 2)),
        "2018-05-07T00:00:00/2018-05-13": between(d(2018, 5, 7), d(2018, 5, 14)),
        "../2018-05-06T23:59:59.999": between(None, d(2018, 5, 6, 23, 59, 59, 999001)),
        "2018-06-10/..": between(d(2018, 6, 10), None),
        "2018-05-09T12:00:00+02:00/2018-05-09T12:00:00Z": between(T, T + timedelta(microseconds=1)),
    }
    for value, want in cases.items():
        got = pages(client, "/collections/trips/items", datetime=value, limit=500)
        assert Counter(map(_key, got)) == want, value
        assert want, value  # each case selects something
    both = pages(
        client, "/collections/trips/items", datetime=T.isoformat(), bbox="14.4,50.25,14.5,50.35"
    )
    want = Counter(k for k in brute_bbox(trips, B).elements() if k[4] == T)
    assert Counter(map(_key, both)) == want and len(both) == 4


def test_one_feature_and_malformed_requests(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    first = client.get("/collections/trips/items", params={"limit": 1}).json()["features"][0]
    one = client.get(f"/collections/trips/items/{first['id']}")
    assert one.status_code == 200 and one.headers["content-type"] == "application/geo+json"
    assert one.json()["geometry"] == first["geometry"]
    for path in (
        "/collections/trips/items/999999999",
        "/collections/trips/items/abc",
        "/collections/trips/items/99999999999999999999999",
        "/collections/clusters/items/1_2_3",
        "/collections/clusters/items/1_2_3_4_5_99999999999",
        "/collections/nope/items",
    ):
        r = client.get(path)
        assert r.status_code == 404 and "detail" in r.json(), path
    bad = [
        {"bbox": "a,b,c,d"},
        {"bbox": "1,2,3"},
        {"bbox": "2,0,1,1"},
        {"bbox": "0,0,nan,1"},
        {"bbox": "0,0,inf,1"},
        {"datetime": "yesterday"},
        {"datetime": "../.."},
        {"datetime": "2018-05-10/2018-05-01"},
        {"datetime": "2018-02-30"},
        {"datetime": "a/b/c"},
        {"limit": "0"},
        {"limit": "ten"},
        {"limit": "-5"},
        {"after": "abc"},
        {"after": "99999999999999999999"},
        {"f": "xml"},
        {"color": "red"},
    ]
    for params in bad:
        r = client.get("/collections/trips/items", params=params)
        assert r.status_code == 400 and "detail" in r.json(), (params, r.text)
    for params in ({"datetime": "2018-05-01"}, {"after": "1_2"}, {"after": "1_2_3_4_5_6_7"}):
        r = client.get("/collections/clusters/items", params=params)
        assert r.status_code == 400 and "detail" in r.json(), (params, r.text)
    big = client.get("/collections/trips/items", params={"limit": 99999999})
    assert big.status_code == 200 and big.json()["numberReturned"] == len(
        trips
    )  # capped, not refused
    assert client.get("/?f=pdf").status_code == 400


def test_tiles(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    tms = "/collections/trips/tiles/WebMercatorQuad"
    # z0: every trip counted once, at its cluster's mean origin
    r = client.get(f"{tms}/0/0/0")
    assert (
        r.status_code == 200 and r.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    )
    layer = mapbox_vector_tile.decode(r.content)["trips"]
    assert sum(f["properties"]["trips"] for f in layer["features"]) == len(trips)
    # Prague's centre at z14 (x 8848, y 5550): single trips as lines, each with an end inside
    r = client.get(f"{tms}/14/5550/8848")
    assert r.status_code == 200
    feats = mapbox_vector_tile.decode(r.content)["trips"]["features"]
    assert feats and all(f["geometry"]["type"] in ("LineString", "MultiLineString") for f in feats)
    assert {"id", "datetime"} <= set(feats[0]["properties"]) or feats[0].get("id")
    clusters = client.get("/collections/clusters/tiles/WebMercatorQuad/4/5/8")
    assert clusters.status_code == 200
    cl = mapbox_vector_tile.decode(clusters.content)["clusters"]["features"]
    assert cl and all(f["properties"]["trips"] >= 1 for f in cl)
    # the middle of the Pacific: nothing
    assert client.get(f"{tms}/10/500/10").status_code == 204
    assert client.get(f"{tms}/14/500/10").status_code == 204
    assert client.get("/collections/clusters/tiles/WebMercatorQuad/10/500/10").status_code == 204
    for bad in ("25/0/0", "3/8/0", "3/0/8", "a/0/0", "3/-1/0"):
        r = client.get(f"{tms}/{bad}")
        assert r.status_code == 400 and "detail" in r.json(), bad
    assert client.get("/collections/trips/tiles/Other/0/0/0").status_code == 404
    assert client.get("/collections/trips/tiles").json()["tilesets"]
    assert len(client.get("/tileMatrixSets/WebMercatorQuad").json()["tileMatrices"]) == 25


@pytest.mark.skipif(not shutil.which("ogrinfo"), reason="gdal-bin not installed")
async def test_gdal_oapif_opens_the_service(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    from tests.e2e.sse import running_server

    trips = make_trips(5, 150) + SPECIAL
    assert ingest(db_url, settings, write_csv(trips, tmp_path / "g.csv"))["state"] == "succeeded"

    async def ogrinfo(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "ogrinfo",
            "-ro",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    async with running_server(settings.model_copy(update={"worker_enabled": False})) as (url, _):
        listing = await ogrinfo(f"OAPIF:{url}/")
        assert "trips" in listing and "clusters" in listing
        for b in (B, C):
            out = await ogrinfo("-q", "-spat", *map(repr, b), f"OAPIF:{url}/", "trips")
            got = [line for line in out.splitlines() if line.startswith("OGRFeature(trips):")]
            assert len(got) == sum(brute_bbox(trips, b).values()), (b, out[-2000:])
