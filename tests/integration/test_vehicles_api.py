"""The original /vehicles contract and the ingestion routes, through the ASGI app."""

from __future__ import annotations

import csv
import shutil
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests.helpers import wait_for_job


@pytest.fixture
def rows(sample_csv: Path) -> list[dict[str, str]]:
    with open(sample_csv, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def client(settings: Settings, db_url: str, inbox: Path, sample_csv: Path):
    shutil.copy(sample_csv, inbox / "trips.csv")
    with TestClient(create_app(settings)) as c:
        r = c.post("/ingestions", json={"path": "trips.csv"})
        assert r.status_code == 202, r.text
        assert wait_for_job(db_url, r.json()["id"])["state"] == "succeeded"
        yield c


def test_count_by_region_and_datasource(client: TestClient, rows: list[dict[str, str]]) -> None:
    for column in ("region", "datasource"):
        expected = Counter(r[column] for r in rows)
        data = client.get(f"/vehicles/{column}/count").json()["data"]
        assert {d[column]: d["count"] for d in data} == dict(expected)
    assert sum(d["count"] for d in client.get("/vehicles/region/count").json()["data"]) == 100
    r = client.get("/vehicles/origin_coord/count")
    assert r.status_code == 400 and "region or datasource" in r.json()["detail"]


def test_weekly_routes(client: TestClient, rows: list[dict[str, str]]) -> None:
    weeks: dict[tuple[str, int], int] = defaultdict(int)
    for r in rows:
        weeks[(r["region"], datetime.fromisoformat(r["datetime"]).isocalendar().week)] += 1
    data = client.get("/vehicles/weekly_trips/region").json()["data"]
    assert {(d["region"], d["week_number"]): d["freq_trip"] for d in data} == dict(weeks)
    avg = client.get("/vehicles/weekly_avg_trips/region").json()["data"]
    for d in avg:
        per = [n for (reg, _), n in weeks.items() if reg == d["region"]]
        assert d["freq_avg_weekly_trips"] == pytest.approx(sum(per) / len(per))


def test_list_filters_and_one(client: TestClient, rows: list[dict[str, str]]) -> None:
    assert len(client.get("/vehicles").json()["data"]) == 10
    turin = client.get("/vehicles", params={"region": "tURIN", "limit": 1000}).json()["data"]
    assert len(turin) == sum(r["region"] == "Turin" for r in rows)
    day = rows[0]["datetime"][:10]
    on_day = client.get("/vehicles", params={"date": day, "limit": 1000}).json()["data"]
    assert len(on_day) == sum(r["datetime"].startswith(day) for r in rows)
    one = client.get(f"/vehicles/{turin[0]['id']}").json()
    assert one == turin[0]
    assert isinstance(one["origin_coord_point_x"], float)
    assert datetime.fromisoformat(one["datetime"])
    x = str(one["origin_coord_point_x"])[:6]
    by_x = client.get("/vehicles", params={"origin_coord_x": x, "limit": 1000}).json()["data"]
    assert by_x and all(str(v["origin_coord_point_x"]).startswith(x) for v in by_x)
    assert client.get("/vehicles/999999").status_code == 404
    assert (
        client.get("/vehicles", params={"origin_coord_x": "x'; drop table trips;--"}).status_code
        == 400
    )


def test_post_vehicles_and_status(client: TestClient) -> None:
    r = client.post("/vehicles")
    assert r.status_code == 200 and r.text == "Ingestion Started"
    status = client.get("/vehicles/ingest-data/status").json()
    assert status["review"] in ("Process Finished", "In processing")


def test_ingestion_routes(client: TestClient, sample_csv: Path) -> None:
    jobs = client.get("/ingestions").json()
    assert jobs[0]["state"] == "succeeded" and jobs[0]["events_url"].endswith("/events")
    # same bytes uploaded: the earlier job, 200
    with open(sample_csv, "rb") as f:
        r = client.post("/ingestions", files={"file": ("again.csv", f, "text/csv")})
    assert r.status_code == 200 and r.json()["id"] == jobs[0]["id"]
    assert client.post("/ingestions", json={"path": "../../etc/passwd"}).status_code == 400
    assert client.post("/ingestions", json={"path": "/etc/passwd"}).status_code == 400
    assert client.post("/ingestions", json={"path": "nope.csv"}).status_code == 404
    assert (
        client.post(
            "/ingestions", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert client.get("/ingestions/424242").status_code == 404
    assert client.get(f"/ingestions/{jobs[0]['id']}/rejections").json() == []
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert "trips_rows_ingested 100.0" in client.get("/metrics").text
