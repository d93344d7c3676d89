"""Ingestion events over real HTTP: whole sequences on one request, resume, other processes,
heartbeats, a database restart, and `trips ingest --server`."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import anyio
import httpx
import psycopg

from service.ingest import jobs
from service.settings import Settings
from tests.e2e.sse import SseStream, running_server, terminal_of
from tests.helpers import query, wait_for_job

TRIPS = str(Path(sys.executable).parent / "trips")
PROGRESS_KEYS = {
    "job_id",
    "rows_read",
    "rows_loaded",
    "rows_rejected",
    "bytes_read",
    "bytes_total",
    "percent",
    "rows_per_s",
    "eta_s",
}


def _table_events(url: str, job_id: int) -> list[tuple[int, str]]:
    rows = query(
        url, "SELECT id, type FROM ingestion_events WHERE job_id = %s ORDER BY id", [job_id]
    )
    return [(r["id"], r["type"]) for r in rows]


async def _upload(client: httpx.AsyncClient, path: Path) -> dict:  # type: ignore[type-arg]
    with open(path, "rb") as f:
        r = await client.post("/ingestions", files={"file": (path.name, f, "text/csv")})
    assert r.status_code == 202, r.text
    return r.json()


async def test_one_request_carries_whole_jobs(
    settings: Settings, db_url: str, sample_csv: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("region,origin\nPrague,POINT (1 2)\n")
    async with running_server(settings) as (base, app), httpx.AsyncClient(base_url=base) as c:
        async with SseStream(c, "/ingestions/events") as all_jobs:
            await app.state.hub.wait_subscribers(1, timeout=10)
            good = await _upload(c, sample_csv)
            events = await all_jobs.until(terminal_of(good["id"]))
            failed = await _upload(c, bad)
            events += await all_jobs.until(terminal_of(failed["id"]))
        # a per-job stream of a finished job replays it and ends
        async with SseStream(c, f"/ingestions/{good['id']}/events") as one_job:
            replayed = await one_job.rest()
        missing = await c.get("/ingestions/999999/events")
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))  # increasing, no duplicate
    mine = [e for e in events if e.json()["job_id"] == good["id"]]
    types = [e.type for e in mine]
    assert types[:2] == ["queued", "started"] and types[-1] == "succeeded"
    assert set(types[2:-1]) == {"progress"} and len(types) >= 4
    assert all(PROGRESS_KEYS <= set(e.json()) for e in mine if e.type == "progress")
    assert mine[-1].json()["rows_loaded"] == 100
    assert [(e.id, e.type) for e in mine] == _table_events(db_url, good["id"])
    assert [(e.id, e.type) for e in replayed] == _table_events(db_url, good["id"])
    bad_events = [e for e in events if e.json()["job_id"] == failed["id"]]
    assert [e.type for e in bad_events] == ["queued", "started", "failed"]
    assert "lacks column" in bad_events[-1].json()["error"]
    assert missing.status_code == 404


async def test_resume_after_last_event_id_replays_exactly_the_missed(
    settings: Settings, db_url: str, sample_csv: Path
) -> None:
    async with running_server(settings) as (base, app), httpx.AsyncClient(base_url=base) as c:
        async with SseStream(c, "/ingestions/events") as first:
            await app.state.hub.wait_subscribers(1, timeout=10)
            job = await _upload(c, sample_csv)
            seen = [await first.next(), await first.next()]
        # the client went away: the server notices and drops its subscription
        await app.state.hub.wait_subscribers(0, timeout=10)
        await anyio.to_thread.run_sync(wait_for_job, db_url, job["id"])
        last = seen[-1]
        assert last is not None and last.id is not None
        async with SseStream(
            c, "/ingestions/events", headers={"Last-Event-ID": str(last.id)}
        ) as resumed:
            rest = await resumed.until(terminal_of(job["id"]))
        # the per-job stream resumes too (header or query), and ends with the job
        async with SseStream(c, f"/ingestions/{job['id']}/events?last_event_id={last.id}") as q:
            by_query = await q.rest()
        bad = await c.get("/ingestions/events", headers={"Last-Event-ID": "x"})
    table = _table_events(db_url, job["id"])
    got = [(e.id, e.type) for e in seen if e is not None] + [(e.id, e.type) for e in rest]
    assert got == table
    assert [(e.id, e.type) for e in by_query] == table[2:]
    assert bad.status_code == 400


async def test_worker_in_another_process_is_heard(
    settings: Settings, db_url: str, inbox: Path, sample_csv: Path
) -> None:
    shutil.copy(sample_csv, inbox / "trips.csv")
    settings = settings.model_copy(update={"worker_enabled": False})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPS_")}
    env.update({"DATABASE_URL": db_url, "TRIPS_API_LOG": ""})
    async with running_server(settings) as (base, app), httpx.AsyncClient(base_url=base) as c:
        async with SseStream(c, "/ingestions/events") as stream:
            await app.state.hub.wait_subscribers(1, timeout=10)
            r = await c.post("/ingestions", json={"path": "trips.csv"})
            assert r.status_code == 202, r.text
            job = r.json()
            assert [(await stream.next()).type] == ["queued"]  # type: ignore[union-attr]
            worker = await asyncio.create_subprocess_exec(
                TRIPS,
                "worker",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                events = await stream.until(terminal_of(job["id"]))
            finally:
                worker.terminate()
                await worker.wait()
    assert events[0].type == "started" and events[-1].type == "succeeded"
    assert events[0].json()["worker"].endswith(f":{worker.pid}")  # the other process claimed it
    assert [e.id for e in events] == [i for i, _ in _table_events(db_url, job["id"])][1:]


async def test_heartbeats_keep_an_idle_stream_open(settings: Settings) -> None:
    async with (
        running_server(settings, heartbeat_s=0.2) as (base, app),
        httpx.AsyncClient(base_url=base) as c,
    ):
        async with SseStream(c, "/ingestions/events") as stream:
            await stream.comments(2, timeout=10)
            assert len(app.state.hub.subscriptions) == 1
        await app.state.hub.wait_subscribers(0, timeout=10)


async def test_stream_survives_a_database_restart(private_pg, inbox: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=private_pg.url,
        data_dir=inbox,
        upload_dir=tmp_path / "up",
        api_log=None,
        watch_inbox=False,
        worker_enabled=False,
        _env_file=None,
    )

    def enqueue(names: list[str]) -> list[int]:
        ids = []
        with psycopg.connect(private_pg.url, autocommit=True) as conn:
            for name in names:
                p = tmp_path / name
                p.write_text(
                    f"region,origin_coord,destination_coord,datetime,datasource\n#{name}\n"
                )
                ids.append(jobs.enqueue(conn, p, name)[0]["id"])
        return ids

    def restart_then_enqueue() -> list[int]:
        private_pg.stop()
        private_pg.start()
        return enqueue(["b.csv", "c.csv", "d.csv"])  # while the listener is still reconnecting

    async with running_server(settings) as (base, app), httpx.AsyncClient(base_url=base) as c:
        hub = app.state.hub
        async with SseStream(c, "/ingestions/events") as stream:
            await hub.wait_subscribers(1, timeout=10)
            before = await anyio.to_thread.run_sync(enqueue, ["a.csv"])
            first = await stream.next()
            after = await anyio.to_thread.run_sync(restart_then_enqueue)
            rest = await stream.until(lambda e: e.json()["job_id"] == after[-1])
        assert hub.connects >= 2  # it reconnected
    assert first is not None and first.json()["job_id"] == before[0]
    assert [e.json()["job_id"] for e in rest] == after
    assert [e.type for e in rest] == ["queued"] * 3
    assert [e.id for e in [first, *rest]] == [
        r["id"] for r in query(private_pg.url, "SELECT id FROM ingestion_events ORDER BY id")
    ]


async def test_trips_ingest_server_draws_progress_and_reports(
    settings: Settings, sample_csv: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("no,columns,here\n1,2,3\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPS_")}
    async with running_server(settings) as (base, _app):

        async def run(*files: Path) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                TRIPS,
                "ingest",
                *map(str, files),
                "--server",
                base,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, " ".join(out.decode().split())

        ok = await run(sample_csv)
        failed = await run(bad)
    assert ok[0] == 0 and "100 rows read, 100 loaded, 0 rejected" in ok[1], ok[1]
    assert failed[0] == 1 and "lacks column" in failed[1], failed[1]
