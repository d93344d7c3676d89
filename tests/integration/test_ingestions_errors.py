"""POST /ingestions {"path": …}: a file that vanishes or turns unreadable between its resolution
and its hashing is the client's 404 or 400 with a clear detail, never a 500, and queues nothing.

The race is made deterministic by wrapping the hashing function: the wrapper changes the file
system (or raises what the kernel would) just before the real hashing runs.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.ingest import uploads
from service.settings import Settings
from tests.helpers import query


@pytest.fixture
def client(settings: Settings, sample_csv: Path) -> Iterator[TestClient]:
    shutil.copy(sample_csv, settings.data_dir / "trips.csv")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _vanish(path: Path) -> None:
    path.unlink()


def _become_a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _raise(exc: OSError) -> Callable[[Path], None]:
    def act(path: Path) -> None:
        raise exc

    return act


CASES = {
    "vanished": (_vanish, 404, "no such file in the data dir: trips.csv"),
    "now a directory": (_become_a_directory, 400, "Is a directory"),
    "unreadable": (
        _raise(PermissionError(errno.EACCES, "Permission denied")),
        400,
        "Permission denied",
    ),
    "i/o error": (_raise(OSError(errno.EIO, "Input/output error")), 400, "Input/output error"),
    "no strerror": (_raise(OSError("odd")), 400, "OSError"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_lost_before_hashing_is_a_client_error(
    client: TestClient, settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    act, status, says = CASES[case]
    real = uploads.sha256_of

    def hash_after(path: Path) -> tuple[str, int]:
        act(path)
        return real(path)

    monkeypatch.setattr(uploads, "sha256_of", hash_after)
    r = client.post("/ingestions", json={"path": "trips.csv"})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert says in detail and "trips.csv" in detail, detail
    assert str(settings.data_dir.resolve()) not in detail  # no server paths in answers
    assert query(db_url, "SELECT count(*) AS n FROM ingestion_jobs")[0]["n"] == 0


def test_a_file_that_stays_is_hashed_and_queued(client: TestClient, sample_csv: Path) -> None:
    r = client.post("/ingestions", json={"path": "trips.csv"})
    assert r.status_code == 202, r.text
    assert r.json()["bytes"] == sample_csv.stat().st_size
