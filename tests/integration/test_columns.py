"""Columnar copies of the job tables (service/analytics/columns.py): the same answers as the
brute force, used only when every job table has one, built by the API after each job."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from service.analytics import columns, pip
from service.api.app import create_app
from service.settings import Settings
from tests.helpers import ingest, query
from tests.integration.analytics_data import Trip, make_trips, write_csv
from tests.integration.test_weekly_average import _ask, _check_against_brute_force, _expected


@pytest.fixture(autouse=True)
def _no_store_after() -> Iterator[None]:
    """The process-wide store (columns.STORE) that an app or a command set ends with the test."""
    yield
    columns.configure(None)


def _big(settings: Settings) -> Settings:
    return settings.model_copy(update={"small_job_rows": 0, "rollup_partition_rows": 0})


def _identity(url: str) -> columns.Identity:
    with psycopg.connect(url, autocommit=True) as conn:
        ident = columns.read_identity(conn)
    assert ident is not None
    return ident


class Spy:
    """Counts the calls of the copies' reads (box edges, pair strips, boxes' both scans,
    polygon probes, polygons' both scans) and of the polygon test run on their points."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: dict[str, int] = {}
        for name in ("box_edge", "pair_edge", "both_box", "probe_points", "both_shape"):
            monkeypatch.setattr(columns, name, self._wrap(name, getattr(columns, name)))
        monkeypatch.setattr(pip.Covers, "__call__", self._wrap("covers", pip.Covers.__call__))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kw: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kw)

        return spy


@pytest.fixture
def copied(
    settings: Settings, db_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, list[Trip], columns.Store]]:
    """Two large jobs (tables of their own, copied) and a small one (trips_p0, not copied)."""
    first, second, third = make_trips(1, 1500), make_trips(2, 400), make_trips(4, 900)
    assert ingest(db_url, _big(settings), write_csv(first, tmp_path / "a.csv"))["state"] == (
        "succeeded"
    )
    assert ingest(db_url, settings, write_csv(second, tmp_path / "b.csv"))["state"] == "succeeded"
    assert ingest(db_url, _big(settings), write_csv(third, tmp_path / "c.csv"))["state"] == (
        "succeeded"
    )
    root = tmp_path / "columns"
    store = columns.Store(root)
    built = columns.build_missing(db_url, store)
    assert sorted(m["rows"] for m in built) == sorted([len(first), len(third)])
    served = settings.model_copy(
        update={"worker_enabled": False, "columns_dir": root, "columns_build": False}
    )
    with TestClient(create_app(served)) as client:
        assert columns.STORE is not None
        yield client, first + second + third, columns.STORE


def test_copies_answer_as_the_brute_force(
    copied: tuple[TestClient, list[Trip], columns.Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, trips, store = copied
    spy = Spy(monkeypatch)
    _check_against_brute_force(client, trips, 150)
    # the copies did answer: boxes' edges, pair strips, polygons' probes and both scans, with
    # the points of cut fine cells tested in numpy
    assert spy.calls.get("box_edge", 0) >= 20, spy.calls
    assert spy.calls.get("pair_edge", 0) >= 1, spy.calls
    assert spy.calls.get("both_box", 0) >= 10, spy.calls
    assert spy.calls.get("probe_points", 0) >= 10, spy.calls
    assert spy.calls.get("both_shape", 0) >= 5, spy.calls
    assert spy.calls.get("covers", 0) >= 10, spy.calls


def test_copies_serve_only_when_every_job_table_has_one(
    copied: tuple[TestClient, list[Trip], columns.Store],
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    db_url: str,
    tmp_path: Path,
) -> None:
    client, trips, store = copied
    assert store.copies(_identity(db_url)) is not None
    more = make_trips(5, 600)
    assert ingest(db_url, _big(settings), write_csv(more, tmp_path / "d.csv"))["state"] == (
        "succeeded"
    )
    trips = trips + more
    ident = _identity(db_url)
    assert len(store.missing(ident)) == 1 and store.copies(ident) is None
    spy = Spy(monkeypatch)
    area = {"match": "origin", "box": (14.3, 49.95, 14.55, 50.2)}
    assert _ask(client, area) == _expected(trips, area)
    assert spy.calls == {}  # the new table has no copy: PostgreSQL alone
    columns.build_missing(db_url, store)
    assert store.copies(_identity(db_url)) is not None
    for match in ("origin", "both", "either"):
        area["match"] = match
        assert _ask(client, area) == _expected(trips, area)
    assert spy.calls.get("box_edge", 0) >= 1


def test_a_copy_holds_its_tables_rows_in_index_order(
    copied: tuple[TestClient, list[Trip], columns.Store], db_url: str
) -> None:
    _, _, store = copied
    ident = _identity(db_url)
    copies = store.copies(ident)
    assert copies is not None
    for (_, table), copy in zip(ident.jobs, copies, strict=True):
        for end, (fr, x, y, ox, oy) in columns._ENDS.items():
            rows = query(
                db_url,
                f"SELECT {fr} AS fr, {x} AS x, {y} AS y, {ox} AS ox, {oy} AS oy,"  # noqa: S608
                " started_at::date - date '1970-01-01' AS day, region_id AS region"
                f" FROM {table} ORDER BY 1, 2, 3, 4, 5, 6, 7",  # output columns, not names
            )
            e = copy.ends[end]
            got = np.column_stack([e.cols[c] for c in columns.COLUMNS]).tolist()
            assert sorted(got) == sorted([[r[c] for c in columns.COLUMNS] for r in rows])
            assert [r["x"] for r in rows] == e.cols["x"].tolist()  # sorted by (row, x)
            fine = np.repeat(np.arange(len(e.starts) - 1) + e.row0, np.diff(e.starts))
            assert fine.tolist() == [r["fr"] for r in rows]


def test_stale_copies_are_neither_used_nor_kept(
    copied: tuple[TestClient, list[Trip], columns.Store], db_url: str
) -> None:
    _, _, store = copied
    ident = _identity(db_url)
    newer = columns.Identity(ident.store, ident.migration + 1, ident.tables)
    assert store.copies(newer) is None  # a later migration: copies made anew
    here = store.root / ident.store
    (here / "trips_job_999-1-m1-v1").mkdir()
    (here / ".tmp-trips_job_998-1-m1-v1-999999999-1").mkdir()
    gone = store.prune(ident)
    assert sorted(gone) == [".tmp-trips_job_998-1-m1-v1-999999999-1", "trips_job_999-1-m1-v1"]
    assert store.copies(ident) is not None


def test_the_api_builds_a_copy_after_each_job(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    """`trips serve` builds the copies it lacks at its start, then after each job's `succeeded`
    event (here a job run by another process, relayed by LISTEN/NOTIFY)."""
    root = tmp_path / "columns"
    served = settings.model_copy(update={"worker_enabled": False, "columns_dir": root})
    first = ingest(db_url, _big(settings), write_csv(make_trips(1, 500), tmp_path / "a.csv"))
    with TestClient(create_app(served)):
        store = columns.STORE
        assert store is not None

        def has(job: dict[str, Any]) -> Callable[[], bool]:
            name = f"trips_job_{job['id']}-"
            return lambda: any(
                p.name.startswith(name) and (p / "meta.json").exists() for p in root.glob("*/*")
            )

        assert store.wait(has(first), 60)  # at start
        second = ingest(db_url, _big(settings), write_csv(make_trips(2, 500), tmp_path / "b.csv"))
        assert second["state"] == "succeeded"
        assert store.wait(has(second), 60)  # after the job's event
        assert store.copies(_identity(db_url)) is not None
    assert columns.STORE is None  # the app's store ends with the app


def test_cli_builds_and_lists_copies(settings: Settings, db_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    job = ingest(db_url, _big(settings), write_csv(make_trips(3, 300), tmp_path / "a.csv"))
    env = {"DATABASE_URL": db_url, "TRIPS_COLUMNS_DIR": str(tmp_path / "columns")}
    listed = CliRunner().invoke(app, ["columns", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"trips_job_{job['id']}" in listed.output and "missing" in listed.output
    assert "reads use the copies: no" in listed.output
    built = CliRunner().invoke(app, ["columns", "build"], env=env)
    assert built.exit_code == 0, built.output
    assert f"trips_job_{job['id']}: {job['rows_loaded']:,} rows" in built.output
    listed = CliRunner().invoke(app, ["columns", "list"], env=env)
    assert "reads use the copies: yes" in listed.output and "missing" not in listed.output
    off = CliRunner().invoke(app, ["columns", "build"], env={**env, "TRIPS_COLUMNS_DIR": ""})
    assert off.exit_code == 2 and "copies are off" in off.output
