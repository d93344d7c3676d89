"""One rule for `limit` on every listing route (NOTES-limits.md): at least 1 (below is a 422), at
most the route's maximum, and a larger value is capped to it (200 with exactly the maximum
when the store holds more), as OGC API - Features and STAC API ask of their `limit`. The
maximum is named in the parameter's OpenAPI description, and is not a schema `maximum`.

One database holds more than every maximum: one file of 10,001 trips (each in a cell of its
own, so as many clusters) and 10,001 rejected rows, and 1,001 jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests.conftest import database_copy
from tests.helpers import ingest

N = 10_001
# route, its maximum, where its items are in the answer
ROUTES = [
    ("/vehicles", 10_000, "data"),
    ("/trips", 5_000, "features"),
    ("/clusters", 1_000, "features"),
    ("/ingestions", 1_000, None),
    ("/ingestions/{job}/rejections", 10_000, None),
]


@pytest.fixture(scope="module")
def limits_db(server_url: str, template_db: str) -> Iterator[str]:
    yield from database_copy(server_url, template_db, "trips_lim")


@pytest.fixture(scope="module")
def loaded(
    limits_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, int]]:
    base = tmp_path_factory.mktemp("limits")
    (base / "inbox").mkdir()
    s = Settings(
        database_url=limits_db,
        data_dir=base / "inbox",
        upload_dir=base / "uploads",
        api_log=None,
        watch_inbox=False,
        worker_enabled=False,
        _env_file=None,
    )
    lines = ["region,origin_coord,destination_coord,datetime,datasource"]
    for i in range(N):
        x = -50 + i * 0.01 + 0.005  # a cell of its own: a cluster of its own
        lines.append(f"Limits,POINT ({x:.3f} 10.005),POINT (20.005 20.005),2018-05-28 09:03:41,lim")
        lines.append("Limits,POINT (1 1),POINT (2 2),not a time,lim")
    f = base / "inbox" / "limits.csv"
    f.write_text("\n".join(lines) + "\n")
    job = ingest(limits_db, s, f)
    assert (job["state"], job["rows_loaded"], job["rows_rejected"]) == ("succeeded", N, N), job
    with psycopg.connect(limits_db, autocommit=True) as conn:
        conn.execute("""INSERT INTO ingestion_jobs (source, path, sha256, bytes, state)
                        SELECT 'f' || g, '/nowhere', md5(g::text), 1, 'failed'
                        FROM generate_series(1, 1000) g""")
    with TestClient(create_app(s)) as client:
        yield client, job["id"]


def _items(body: Any, key: str | None) -> list[Any]:
    return body[key] if key else body


@pytest.mark.parametrize("route,maximum,key", ROUTES)
def test_a_limit_above_the_maximum_is_capped(
    loaded: tuple[TestClient, int], route: str, maximum: int, key: str | None
) -> None:
    client, job_id = loaded
    path = route.format(job=job_id)
    for limit in (maximum, maximum + 1, 10**30):
        r = client.get(path, params={"limit": limit})
        assert r.status_code == 200, (path, limit, r.text[:300])
        assert len(_items(r.json(), key)) == maximum, (path, limit)
    small = client.get(path, params={"limit": 3})
    assert small.status_code == 200 and len(_items(small.json(), key)) == 3
    for bad in ("0", "-1", "abc", "1.5"):
        r = client.get(path, params={"limit": bad})
        assert r.status_code == 422, (path, bad, r.text)
        assert "limit" in str(r.json()["detail"])


@pytest.mark.parametrize("route,maximum,key", ROUTES)
def test_the_maximum_is_documented(
    loaded: tuple[TestClient, int], route: str, maximum: int, key: str | None
) -> None:
    client, _ = loaded
    op = client.get("/openapi.json").json()["paths"][route.replace("{job}", "{job_id}")]["get"]
    (param,) = [p for p in op["parameters"] if p["name"] == "limit"]
    assert f"at most {maximum} (larger values are capped)" in param["description"]
    assert param["schema"]["minimum"] == 1 and "maximum" not in param["schema"]
