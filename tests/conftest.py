"""Real PostGIS for every test: a migrated template database made once per session, and a fresh
copy of it (CREATE DATABASE … TEMPLATE) for each test that asks for one.

DATABASE_URL selects an external server; otherwise the project's embedded local cluster is
started; where neither works and a Docker engine answers, testcontainers starts postgis/postgis.

TRIPS_TEST_CITUS=1 is the Citus pass (tests/citus_mode.py): one migrated database on a Citus
coordinator (DATABASE_URL when it points at one, else a throwaway CitusCluster with two workers),
emptied before each test instead of copied (Citus does not propagate CREATE DATABASE).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from service.db.migrate import migrate
from service.settings import Settings
from tests import citus_mode

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "raw" / "trips.csv"


def _server_url() -> Iterator[str]:
    if citus_mode.ON:
        yield from citus_mode.coordinator_url()
        return
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from service.db import cluster

    try:
        yield cluster.up().url
        return
    except cluster.ClusterError:
        if not shutil.which("docker"):
            raise
    from testcontainers.postgres import PostgresContainer  # pragma: no cover

    with PostgresContainer("postgis/postgis:16-3.4", driver=None) as pg:  # pragma: no cover
        yield pg.get_connection_url()


def _with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    yield from _server_url()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    if citus_mode.ON:  # the one migrated database of the Citus pass
        yield citus_mode.migrated(server_url)
        return
    name = f"trips_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _with_db(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(_with_db(server_url, name))
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_copy(server_url: str, template_db: str, prefix: str) -> Iterator[str]:
    """Yields the URL of a fresh copy of the migrated template; drops it afterwards. The body of
    `db_url` (a copy per test) and of module-scoped fixtures (a copy per module). In the Citus
    pass: the one migrated database, emptied."""
    if citus_mode.ON:
        yield citus_mode.emptied(_with_db(server_url, template_db))
        return
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _with_db(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield _with_db(server_url, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    yield from database_copy(server_url, template_db, "trips_t")


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    d = tmp_path / "inbox"
    d.mkdir()
    return d


@pytest.fixture
def settings(db_url: str, inbox: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=inbox,
        upload_dir=tmp_path / "uploads",
        api_log=None,
        watch_inbox=False,
        heartbeat_seconds=1.0,
        stale_after_seconds=5.0,
        _env_file=None,
    )


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE


@pytest.fixture
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A PostGIS server of this test's own, migrated, that the test may stop and restart.

    Needs the local PostgreSQL binaries (it is skipped with an external DATABASE_URL only when
    they are absent). Its data lives under /var/tmp so the postgres OS user can reach it.
    """
    import tempfile

    from service.db import cluster

    if citus_mode.ON:
        pytest.skip(citus_mode.PRIVATE_PG)

    try:
        cluster.pg_bindir()
    except cluster.ClusterError:
        pytest.skip("no local PostgreSQL server binaries for a private cluster")
    base = Path(tempfile.mkdtemp(prefix="trips-private-pg-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    pg = cluster.PrivateCluster(base / "pg").start()
    migrate(pg.url)
    yield pg
    pg.destroy()
    shutil.rmtree(base, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    citus_mode.mark_skips(items)
