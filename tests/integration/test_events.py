"""The event hub against a real PostGIS: one listener for many subscribers, slow subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from service.events.hub import APPLICATION_NAME, Event, Hub, stream
from service.events.store import write_event
from service.ingest import jobs
from tests.helpers import query


@pytest.fixture
async def hub_and_pool(db_url: str) -> AsyncIterator[tuple[Hub, AsyncConnectionPool]]:
    hub = Hub(queue_size=4)
    await hub.start(db_url, wait_s=10)
    async with AsyncConnectionPool(
        db_url, min_size=1, max_size=4, kwargs={"autocommit": True}
    ) as pool:
        yield hub, pool
    await hub.stop()


def _write_events(url: str, path: Path, n: int) -> tuple[int, list[int]]:
    """A job with its `queued` event and `n` progress events, each committed on its own."""
    path.write_text("region,origin_coord,destination_coord,datetime,datasource\n")
    with psycopg.connect(url, autocommit=True) as conn:
        job, _ = jobs.enqueue(conn, path, path.name)
        ids = [write_event(conn, job["id"], "progress", {"rows_read": i}) for i in range(n)]
    return job["id"], ids


async def _take(events: AsyncIterator[Event], n: int) -> list[Event]:
    return [await anext(events) for _ in range(n)]


async def test_many_subscribers_share_one_listening_connection(
    hub_and_pool: tuple[Hub, AsyncConnectionPool], db_url: str, tmp_path: Path
) -> None:
    hub, pool = hub_and_pool
    streams = [stream(hub, pool, None, None) for _ in range(200)]
    readers = [asyncio.create_task(_take(s, 6)) for s in streams]
    await hub.wait_subscribers(200, timeout=10)
    job_id, ids = await anyio.to_thread.run_sync(_write_events, db_url, tmp_path / "a.csv", 5)
    got = await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert all([e.id for e in events][1:] == ids for events in got)
    listeners = query(
        db_url,
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s",
        [APPLICATION_NAME],
    )
    assert listeners[0]["n"] == 1
    for s in streams:
        await s.aclose()
    await hub.wait_subscribers(0, timeout=10)


async def test_slow_subscriber_resyncs_from_the_table_and_blocks_no_one(
    hub_and_pool: tuple[Hub, AsyncConnectionPool], db_url: str, tmp_path: Path
) -> None:
    hub, pool = hub_and_pool  # queues hold 4 events
    slow, fast = stream(hub, pool, None, None), stream(hub, pool, None, None)
    slow_first = asyncio.create_task(_take(slow, 1))
    fast_all = asyncio.create_task(_take(fast, 31))
    await hub.wait_subscribers(2, timeout=10)
    job_id, ids = await anyio.to_thread.run_sync(_write_events, db_url, tmp_path / "b.csv", 30)
    fast_events = await asyncio.wait_for(fast_all, 30)  # while the slow one reads nothing more
    assert [e.id for e in fast_events][1:] == ids
    assert any(s.overflowed for s in hub.subscriptions)  # the slow one fell behind
    slow_events = await asyncio.wait_for(slow_first, 10) + await asyncio.wait_for(
        _take(slow, 30), 30
    )
    assert [e.id for e in slow_events] == [e.id for e in fast_events]  # no gap, no duplicate
    await slow.aclose()
    await fast.aclose()


async def test_stop_ends_the_listener_while_events_flow(db_url: str, tmp_path: Path) -> None:
    """Shutdown while the listener is busy catching up: `stop()` returns and the listening
    connection is gone, every time (Python 3.11's wait_for could swallow the cancel)."""
    flowing = True

    def writer() -> None:
        path = tmp_path / "flow.csv"
        path.write_text("region,origin_coord,destination_coord,datetime,datasource\n")
        with psycopg.connect(db_url, autocommit=True) as conn:
            job, _ = jobs.enqueue(conn, path, path.name)
            i = 0
            while flowing:
                write_event(conn, job["id"], "progress", {"rows_read": i})
                i += 1

    task = asyncio.create_task(anyio.to_thread.run_sync(writer))
    try:
        for _ in range(15):
            hub = Hub(idle_check_s=0.05)
            await hub.start(db_url, wait_s=10)
            assert hub.connected.is_set()
            async with asyncio.timeout(5):
                await hub.stop()
            assert hub._task is not None and hub._task.done()
        async with asyncio.timeout(10):
            while query(
                db_url,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = "
                "current_database() AND application_name = %s",
                [APPLICATION_NAME],
            )[0]["n"]:
                await asyncio.sleep(0.05)
    finally:
        flowing = False
        await task
