"""The embedded local cluster (service/db/cluster.py), on a project root of its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from service.db import cluster

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="DATABASE_URL selects an external server"
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project root of its own (its cluster's data directory follows from its path)."""
    monkeypatch.setenv("TRIPS_PROJECT_ROOT", str(tmp_path))
    yield tmp_path
    info = cluster.load_info()
    cluster.down()
    if info is not None:
        shutil.rmtree(info.datadir, ignore_errors=True)


def test_up_adopts_the_running_server_of_a_lost_state_file(project: Path) -> None:
    """A fresh clone at the path of a cluster that still runs has no .local/cluster.json: `up`
    finds the running server's port instead of waiting on a port nobody listens on."""
    first = cluster.up()
    (project / ".local" / "cluster.json").unlink()
    again = cluster.up()
    assert again.datadir == first.datadir and again.port == first.port
    with psycopg.connect(again.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert cluster.load_info() == again  # the state file is written again
