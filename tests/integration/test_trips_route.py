"""GET /trips (GeoJSON, exact filters, keyset paging) and the original challenge's SQL questions."""

from __future__ import annotations

import csv
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from geojson_pydantic import FeatureCollection

from service.api.app import create_app
from service.settings import Settings
from tests.conftest import ROOT
from tests.helpers import ingest
from tests.integration.analytics_data import Trip, in_box, make_trips, write_csv


@pytest.fixture
def loaded(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, list[Trip]]]:
    trips = make_trips(7, 700)
    assert ingest(db_url, settings, write_csv(trips, tmp_path / "a.csv"))["state"] == "succeeded"
    with TestClient(create_app(settings.model_copy(update={"worker_enabled": False}))) as c:
        yield c, trips


def _all_pages(client: TestClient, **params: object) -> list[dict]:
    features, url, pages = [], "/trips", 0
    r = client.get(url, params={**params, "limit": 50})
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        body = r.json()
        FeatureCollection.model_validate(body)
        features += body["features"]
        pages += 1
        nxt = [link["href"] for link in body.get("links", []) if link["rel"] == "next"]
        if not nxt:
            assert body["next_after_id"] is None
            return features
        assert body["next_after_id"] == body["features"][-1]["id"]
        r = client.get(nxt[0])


def test_filters_and_paging_equal_brute_force(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, trips = loaded
    t = trips[-1]
    box = (t.ox, t.oy, 14.5, math.nextafter(50.1, 0))
    cases = [
        ({}, lambda tr: True),
        ({"region": "PRAGUE"}, lambda tr: tr.region.lower() == "prague"),
        (
            {"datasource": "cheap_mobile", "region": "são paulo"},
            lambda tr: tr.datasource == "cheap_mobile" and tr.region == "São Paulo",
        ),
        (
            {"from": "2018-05-07", "to": "2018-05-13"},
            lambda tr: date(2018, 5, 7) <= tr.at.date() <= date(2018, 5, 13),
        ),
    ]
    for match in ("origin", "destination", "both", "either"):

        def keep(tr: Trip, m: str = match) -> bool:
            o, d = in_box(box, tr.ox, tr.oy), in_box(box, tr.dx, tr.dy)
            return {"origin": o, "destination": d, "both": o and d, "either": o or d}[m]

        cases.append(({"bbox": ",".join(map(repr, box)), "match": match}, keep))
    for params, keep in cases:
        got = _all_pages(client, **params)
        ids = [f["id"] for f in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert len(got) == sum(map(keep, trips)), params
        assert Counter(
            (
                f["properties"]["region"],
                tuple(f["geometry"]["coordinates"][0]),
                tuple(f["geometry"]["coordinates"][1]),
            )
            for f in got
        ) == Counter((tr.region, (tr.ox, tr.oy), (tr.dx, tr.dy)) for tr in trips if keep(tr)), (
            params
        )


def test_bad_trip_requests(loaded: tuple[TestClient, list[Trip]]) -> None:
    client, _ = loaded
    for params in (
        {"bbox": "0,0,1"},
        {"match": "x"},
        {"from": "yesterday"},
        {"after_id": -1},
        {"limit": 0},
        {"from": "2018-06-01", "to": "2018-05-01"},
    ):
        r = client.get("/trips", params=params)
        assert r.status_code == 422, (params, r.text)
    assert client.get("/trips", params={"region": "Atlantis"}).status_code == 404
    assert len(client.get("/trips", params={"limit": 10**9}).json()["features"]) <= 5000


def _sample_rows() -> list[dict[str, str]]:
    with open(ROOT / "data" / "raw" / "trips.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sample_db(settings: Settings, db_url: str, inbox: Path, sample_csv: Path) -> str:
    shutil.copy(sample_csv, inbox / "trips.csv")
    assert ingest(db_url, settings, inbox / "trips.csv")["state"] == "succeeded"
    return db_url


def test_bonus_queries_on_the_sample(sample_db: str) -> None:
    rows = _sample_rows()
    queries = ROOT / "db" / "queries"
    with psycopg.connect(sample_db) as conn:
        got = conn.execute(
            (queries / "latest_datasource_of_top_two_regions.sql").read_text()
        ).fetchall()
        top2 = Counter(r["region"] for r in rows).most_common(2)
        expected = [
            (reg, n, max((r["datetime"], r["datasource"]) for r in rows if r["region"] == reg)[1])
            for reg, n in top2
        ]
        assert [(g[0], g[1], g[2]) for g in got] == expected
        got = conn.execute((queries / "regions_with_cheap_mobile.sql").read_text()).fetchall()
        assert [g[0] for g in got] == sorted(
            {r["region"] for r in rows if r["datasource"] == "cheap_mobile"}
        )
