"""A local Citus cluster (service/db/citus.py): a coordinator and two workers, PostGIS on each,
a distributed table of points read back through the coordinator. Citus is installed first when
missing (db/install-citus.sh); TRIPS_SKIP_CITUS=1 skips these tests, nothing else does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from service.db import citus

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("TRIPS_SKIP_CITUS") == "1", reason="TRIPS_SKIP_CITUS=1 skips Citus"
    ),
    pytest.mark.slow,
]

TRIPS = str(Path(sys.executable).parent / "trips")


def check_distributed_points(url: str) -> None:
    """Two active workers; a distributed table of PostGIS points answers ST_Covers through the
    coordinator from shards on both workers."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()").fetchone()
        assert row == (2,)
        conn.execute(
            "CREATE TABLE points (id bigint, region text NOT NULL, geom geometry(Point, 4326))"
        )
        conn.execute("SELECT create_distributed_table('points', 'region')")
        conn.execute(
            "INSERT INTO points SELECT i, 'region' || (i % 10),"
            " ST_SetSRID(ST_MakePoint(14 + i * 0.01, 50), 4326) FROM generate_series(0, 99) i"
        )
        box = "ST_MakeEnvelope(14.0, 49.0, 14.5, 51.0, 4326)"  # i in 0..50, both edges inside
        covered = conn.execute(
            f"SELECT count(*), sum(id) FROM points WHERE ST_Covers({box}, geom)"  # noqa: S608
        ).fetchone()
        assert covered == (51, sum(range(51)))
        nodes = conn.execute(
            "SELECT count(DISTINCT nodeport) FROM citus_shards"
            " WHERE table_name = 'points'::regclass"
        ).fetchone()
        assert nodes == (2,)


def test_citus_cluster_helper_runs_distributed_postgis() -> None:
    with citus.CitusCluster(workers=2) as url:
        check_distributed_points(url)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a project root of its own (its clusters' data follow from its path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPS_")}
    env.pop("DATABASE_URL", None)
    env["TRIPS_PROJECT_ROOT"] = str(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIPS_PROJECT_ROOT", str(tmp_path))
        nodes = citus._base_dir()
    yield env
    subprocess.run([TRIPS, "db", "down"], env=env, capture_output=True, check=False)
    shutil.rmtree(nodes, ignore_errors=True)


def trips(env: dict[str, str], *args: str) -> str:
    res = subprocess.run([TRIPS, *args], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_trips_db_up_workers_starts_a_citus_cluster(project: dict[str, str]) -> None:
    url = trips(project, "db", "up", "--workers", "2")
    assert trips(project, "db", "url") == url
    status = trips(project, "db", "status")
    assert status.count(": running: ") == 3, status
    assert "active workers (seen by the coordinator): 2" in status
    check_distributed_points(url)

    assert trips(project, "db", "down") == "stopped"
    assert trips(project, "db", "status").count(": stopped: ") == 3
    # Up again on the recorded nodes (no --workers): same coordinator, shards still there.
    assert trips(project, "db", "up") == url
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) FROM points").fetchone() == (100,)
