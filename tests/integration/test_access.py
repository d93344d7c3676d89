"""Nobody writes without the right: bearer token on every write route, reads open, upload size
cap enforced while streaming, `path` confined to the data dir, a loud warning for exposed serves.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service import cli
from service.api.app import create_app
from service.settings import Settings
from tests.helpers import wait_for_job

TOKEN = "s3cret-Token_with.symbols~"
HEADER = "region,origin_coord,destination_coord,datetime,datasource\n"
ROW = "Prague,POINT (14.4 50.1),POINT (14.5 50.2),2018-05-28 09:03:41,funny_car\n"
# Every route that is not a GET, and whether it writes. A new one fails the test until listed.
WRITES = {("POST", "/ingestions"), ("POST", "/vehicles")}
READ_POSTS = {("POST", "/stats/weekly-average")}  # a read whose area comes as a GeoJSON body
# Infinite event streams are covered by the events tests; /metrics is plain text.
SKIP_GETS = {"/ingestions/events", "/ingestions/{job_id}/events"}


@pytest.fixture
def guarded(settings: Settings, inbox: Path) -> Settings:
    (inbox / "trips.csv").write_text(HEADER + ROW * 3)
    return settings.model_copy(update={"api_token": TOKEN, "max_upload_mb": 1})


@pytest.fixture
def client(guarded: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(guarded)) as c:
        yield c


def uploads(settings: Settings) -> list[Path]:
    d = settings.uploads
    return sorted(d.iterdir()) if d.exists() else []


def write_request(
    client: TestClient, method: str, path: str, headers: dict[str, Any]
) -> httpx.Response:
    if path == "/ingestions":
        return client.post(path, json={"path": "trips.csv"}, headers=headers)
    return client.request(method, path, headers=headers)


def test_every_non_get_route_is_classified(client: TestClient) -> None:
    ops = {
        (m.upper(), p)
        for p, item in client.get("/openapi.json").json()["paths"].items()
        for m in item
        if m.upper() != "GET"
    }
    assert ops == WRITES | READ_POSTS, "classify new routes as writes (token) or reads"


@pytest.mark.parametrize("method,path", sorted(WRITES))
@pytest.mark.parametrize(
    "auth,status",
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        ("Bearer    ", 401),
        (f"Basic {TOKEN}", 401),
        (TOKEN, 401),
        ("Bearer wrong", 403),
        (f"Bearer {TOKEN[:-1]}", 403),
        (f"Bearer {TOKEN}x", 403),
        (f"Bearer {TOKEN.upper()}", 403),
        (f"Bearer {TOKEN} {TOKEN}", 403),
        ("Bearer ' OR '1'='1", 403),
        ("Bearer \u00e9t\u00e9", 403),
    ],
)
def test_writes_need_the_token(
    client: TestClient, guarded: Settings, method: str, path: str, auth: str | None, status: int
) -> None:
    headers = {} if auth is None else {"Authorization": auth.encode()}
    r = write_request(client, method, path, headers)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/ingestions").json() == [], "a refused write queued nothing"


@pytest.mark.parametrize("method,path", sorted(WRITES))
@pytest.mark.parametrize("auth", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  "])
def test_writes_with_the_token(
    client: TestClient, db_url: str, method: str, path: str, auth: str
) -> None:
    r = write_request(client, method, path, {"Authorization": auth})
    assert r.status_code in (200, 202), r.text
    jobs = client.get("/ingestions").json()
    assert len(jobs) == 1
    assert wait_for_job(db_url, jobs[0]["id"])["rows_loaded"] == 3


def test_upload_is_refused_before_it_is_read(guarded: Settings, client: TestClient) -> None:
    r = client.post("/ingestions", files={"file": ("t.csv", HEADER + ROW, "text/csv")})
    assert r.status_code == 401
    assert uploads(guarded) == []


def test_reads_stay_open(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, item in paths.items():
        if "get" not in item or path in SKIP_GETS:
            continue
        url = path.replace("{job_id}", "1").replace("{trip_id}", "1").replace("{column}", "region")
        r = client.get(url)
        assert r.status_code not in (401, 403, 500), (url, r.status_code, r.text)
        checked += 1
    r = client.post(
        "/stats/weekly-average",
        json={"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
    )
    assert r.status_code not in (401, 403, 500), r.text
    assert checked >= 10


def test_without_a_token_writes_are_open(settings: Settings, inbox: Path) -> None:
    (inbox / "trips.csv").write_text(HEADER + ROW)
    with TestClient(create_app(settings)) as c:
        assert c.post("/ingestions", json={"path": "trips.csv"}).status_code == 202


# -- upload size ---------------------------------------------------------------------------------


@pytest.fixture
async def aclient(guarded: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(guarded)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:
            yield c


def multipart(
    total: int, consumed: list[int], chunk: int = 64 << 10, boundary: str = "b0undary"
) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """A multipart body of a `total`-byte file, streamed; `consumed` counts the bytes taken."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.csv"\r\nContent-Type: text/csv\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body() -> AsyncIterator[bytes]:
        consumed[0] += len(head)
        yield head
        sent = len(HEADER)
        consumed[0] += sent
        yield HEADER.encode()
        line = ROW.encode()
        block = line * (chunk // len(line))
        while sent < total:
            piece = block[: total - sent]
            sent += len(piece)
            consumed[0] += len(piece)
            yield piece
        consumed[0] += len(tail)
        yield tail

    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body()


async def test_upload_over_the_cap_stops_early_and_leaves_nothing(
    aclient: httpx.AsyncClient, guarded: Settings
) -> None:
    consumed = [0]
    headers, body = multipart(20 << 20, consumed)  # 20 MiB, no Content-Length: chunked
    r = await aclient.post("/ingestions", headers=headers, content=body)
    assert r.status_code == 413, r.text
    assert "TRIPS_MAX_UPLOAD_MB" in r.json()["detail"]
    assert consumed[0] < 2 << 20, f"read {consumed[0]} bytes of a 20 MiB body"
    assert uploads(guarded) == []
    assert (await aclient.get("/ingestions")).json() == []


async def test_declared_oversize_is_refused_unread(
    aclient: httpx.AsyncClient, guarded: Settings
) -> None:
    consumed = [0]
    headers, body = multipart(20 << 20, consumed)
    headers["Content-Length"] = str(20 << 20)
    r = await aclient.post("/ingestions", headers=headers, content=body)
    assert r.status_code == 413
    assert consumed[0] < 1 << 20
    assert uploads(guarded) == []


async def test_upload_at_the_cap_is_accepted(
    aclient: httpx.AsyncClient, guarded: Settings, db_url: str
) -> None:
    rows = ((1 << 20) - len(HEADER)) // len(ROW)
    data = HEADER + ROW * rows
    assert len(data) <= 1 << 20
    r = await aclient.post("/ingestions", files={"file": ("../../../etc/x.csv", data, "text/csv")})
    assert r.status_code == 202, r.text
    kept = uploads(guarded)
    assert len(kept) == 1 and kept[0].read_text() == data
    assert kept[0].name.endswith("x.csv") and ".." not in kept[0].name


@pytest.mark.parametrize(
    "headers,content",
    [
        ({"Content-Type": "multipart/form-data"}, b"--x\r\n"),  # no boundary
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"garbage without parts"),
        (
            {"Content-Type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--x--\r\n',
        ),
        (
            {"Content-Type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nregion',
        ),
        ({"Content-Type": "text/csv"}, (HEADER + ROW).encode()),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"path=trips.csv"),
        ({}, b""),
    ],
)
async def test_malformed_uploads_are_400(
    aclient: httpx.AsyncClient, guarded: Settings, headers: dict[str, str], content: bytes
) -> None:
    r = await aclient.post("/ingestions", headers=headers, content=content)
    assert r.status_code == 400, r.text
    assert uploads(guarded) == []


# -- paths ---------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path, inbox: Path) -> Path:
    secret = tmp_path / "secret.csv"
    secret.write_text(HEADER + ROW)
    (inbox / "link_out.csv").symlink_to(secret)
    (inbox / "dir_out").symlink_to(tmp_path)
    (inbox / "sub").mkdir()
    (inbox / "sub" / "inner.csv").write_text(HEADER + ROW * 2)
    (inbox / "link_in.csv").symlink_to(inbox / "sub" / "inner.csv")
    (inbox / "loop").symlink_to(inbox / "loop")
    return secret


@pytest.mark.parametrize(
    "path,status",
    [
        ("../secret.csv", 400),
        ("sub/../../secret.csv", 400),
        ("./../secret.csv", 400),
        ("..", 400),
        ("/etc/passwd", 400),
        ("SECRET", 400),  # replaced with the absolute path of the file outside
        ("link_out.csv", 400),
        ("dir_out/secret.csv", 400),
        (
            "dir_out/inbox/trips.csv",
            202,
        ),  # out through one link and back in: the real file is inside
        ("loop", 400),
        ("loop/x.csv", 400),
        ("x" * 5000, 400),
        ("a/" * 3000 + "x.csv", 400),
        ("", 400),
        ("trips.csv\x00.png", 400),
        ("sub", 404),
        ("nope.csv", 404),
        ("..\\..\\secret.csv", 404),  # a plain (odd) file name on POSIX
        ("%2e%2e/secret.csv", 404),
        ("link_in.csv", 202),
        ("sub/inner.csv", 202),
    ],
)
def test_paths_outside_the_data_dir_are_refused(
    client: TestClient, outside: Path, path: str, status: int
) -> None:
    if path == "SECRET":
        path = str(outside)
    r = client.post(
        "/ingestions", json={"path": path}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == status, r.text
    if status >= 400:
        assert "detail" in r.json()
        assert client.get("/ingestions").json() == []


# -- the exposed-serve warning --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host,token,warns",
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("192.0.2.10", None, True),
        ("example.com", None, True),
        ("0.0.0.0", TOKEN, False),
        ("127.0.0.1", None, False),
        ("127.0.0.2", None, False),
        ("localhost", None, False),
        ("::1", None, False),
    ],
)
def test_serve_warns_when_exposed_without_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str, token: str | None, warns: bool
) -> None:
    import uvicorn

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    monkeypatch.chdir(tmp_path)  # no .env of the project
    for key in [k for k in os.environ if k.startswith("TRIPS_")]:
        monkeypatch.delenv(key)
    if token:
        monkeypatch.setenv("TRIPS_API_TOKEN", token)
    monkeypatch.setenv("TRIPS_API_LOG", "")
    result = CliRunner().invoke(cli.app, ["serve", "--host", host, "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert served == [{"host": host, "port": 8765, "log_level": "info"}]
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert ("WARNING" in out and "TRIPS_API_TOKEN" in out) is warns, out


def test_serve_warns_for_host_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRIPS_API_TOKEN", raising=False)
    monkeypatch.setenv("TRIPS_HOST", "0.0.0.0")
    monkeypatch.setenv("TRIPS_API_LOG", "")
    result = CliRunner().invoke(cli.app, ["serve"])
    assert "WARNING" in result.output + (result.stderr if result.stderr_bytes else "")


async def test_unauthorised_upload_is_not_read(
    aclient: httpx.AsyncClient, guarded: Settings
) -> None:
    """The token is checked before the body is read: a refused 20 MiB upload costs nothing."""
    for auth, status in (("Bearer wrong", 403), ("", 401)):
        consumed = [0]
        headers, body = multipart(20 << 20, consumed)
        r = await aclient.post(
            "/ingestions", headers={**headers, "Authorization": auth}, content=body
        )
        assert r.status_code == status, r.text
        assert consumed[0] < 1 << 20, f"read {consumed[0]} bytes before refusing"
        assert uploads(guarded) == []
