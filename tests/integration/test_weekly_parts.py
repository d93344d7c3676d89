"""A weekly average read in parts on two connections: the same answer, from one snapshot."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from service.analytics import weekly
from service.analytics.area import BBox, parse_geometry
from service.db.pool import spare_connection
from service.settings import Settings
from tests.helpers import ingest, query
from tests.integration.analytics_data import make_trips, write_csv

PRAGUE_BOX = BBox(14.3, 49.95, 14.55, 50.2)
HEXAGON = (
    '{"type": "Polygon", "coordinates": [[[14.30, 50.08], [14.37, 49.96], [14.50, 49.96],'
    " [14.57, 50.08], [14.50, 50.20], [14.37, 50.20], [14.30, 50.08]]]}"
)
AREAS = {"box": PRAGUE_BOX, "polygon": parse_geometry(HEXAGON)}
W0, W1 = date(2018, 4, 30), date(2018, 6, 11)


class Spares:
    """A spare-connection provider that counts the connections it gives, and may run `before`
    (in a thread) as each is handed out."""

    def __init__(self, url: str, before: Callable[[], object] | None = None):
        self.url, self.before, self.given = url, before, 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if self.before is not None:
            await asyncio.wait_for(anyio.to_thread.run_sync(self.before), 60)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            self.given += 1
            yield conn


async def _counts(url: str, area: object, match: str, spare: Spares | None) -> Counter[date]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await weekly.weekly_counts(
            conn, regions=None, area=area, match=match, w0=W0, w1=W1, spare=spare
        )


@pytest.fixture
def stored(db_url: str, settings: Settings, tmp_path: Path) -> str:
    big = settings.model_copy(update={"small_job_rows": 0, "rollup_partition_rows": 0})
    assert ingest(db_url, big, write_csv(make_trips(5, 2000), tmp_path / "a.csv"))["state"] == (
        "succeeded"
    )
    return db_url


@pytest.mark.parametrize("kind", list(AREAS))
@pytest.mark.parametrize("match", ["origin", "destination", "both", "either"])
async def test_parts_on_two_connections_equal_one(stored: str, kind: str, match: str) -> None:
    spare = Spares(stored)
    alone = await _counts(stored, AREAS[kind], match, None)
    shared = await _counts(stored, AREAS[kind], match, spare)
    assert spare.given == 1  # the parts did run on two connections
    assert sum(alone.values()) > 0
    assert shared == alone


async def test_every_part_reads_the_first_connections_snapshot(
    stored: str, settings: Settings, tmp_path: Path
) -> None:
    """Trips committed after the query began (here: while its spare connection is fetched) are
    in none of its parts, although they lie in the rows of both halves."""
    more = write_csv(make_trips(6, 2000), tmp_path / "b.csv")
    area = AREAS["polygon"]
    before = await _counts(stored, area, "either", None)

    def commit_more() -> None:
        assert ingest(stored, settings, more)["state"] == "succeeded"

    spare = Spares(stored, before=commit_more)
    during = await _counts(stored, area, "either", spare)
    after = await _counts(stored, area, "either", None)
    assert spare.given == 1
    assert sum(after.values()) > sum(before.values())  # the new trips are in the area
    assert during == before


async def test_a_busy_pool_gives_no_spare_and_the_answer_stands(stored: str) -> None:
    """With every connection of the pool taken, a request reads all its parts on its own one
    (after SPARE_WAIT_S), the same answer; the spare is given back when one is free."""
    area = AREAS["polygon"]
    alone = await _counts(stored, area, "either", None)
    async with AsyncConnectionPool(
        stored, min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as pool:
        async with pool.connection() as conn:  # the request's connection: the pool is empty
            async with spare_connection(pool) as none:
                assert none is None
            busy = await weekly.weekly_counts(
                conn,
                regions=None,
                area=area,
                match="either",
                w0=W0,
                w1=W1,
                spare=lambda: spare_connection(pool),
            )
        assert busy == alone
        async with spare_connection(pool) as free:
            assert free is not None
        assert pool.get_stats()["pool_available"] == 1


@pytest.mark.parametrize("match", ["origin", "both", "either"])
async def test_a_job_attached_while_the_query_reads_is_all_in_or_all_out(
    stored: str, settings: Settings, tmp_path: Path, match: str
) -> None:
    """A large job's trips are COPY FREEZE'd into a table of their own and attached to `trips`
    when the job commits: frozen rows are visible to every snapshot, and a partition attached
    after a query's snapshot was taken is in the plans of the statements planned after it,
    while the job's rollup rows (plain MVCC rows) are not. Such a job, committed between the
    query's snapshot and the planning of its raw parts, must be counted wholly or not at all:
    here the answer must equal one read before or one read after it."""
    big = settings.model_copy(update={"small_job_rows": 0, "rollup_partition_rows": 0})
    more = write_csv(make_trips(6, 2000), tmp_path / "b.csv")
    area = AREAS["box"]
    before = await _counts(stored, area, match, None)
    commits: list[str] = []

    def commit_more() -> None:
        if not commits:  # once, while the first attempt reads
            commits.append(ingest(stored, big, more)["state"])

    spare = Spares(stored, before=commit_more)
    during = await _counts(stored, area, match, spare)
    after = await _counts(stored, area, match, None)
    assert commits == ["succeeded"]
    assert sum(after.values()) > sum(before.values())  # the new trips are in the area
    assert during in (before, after)
    assert spare.given == 2  # the first read saw the attach and was made again, in full


async def test_the_last_attempt_holds_attaches_off(
    stored: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no optimistic attempt left, the read locks `trips` before its snapshot: a job's
    attach waits for the read's end, and the read answers as before the job."""
    monkeypatch.setattr(weekly, "OPTIMISTIC_READS", 0)
    big = settings.model_copy(update={"small_job_rows": 0, "rollup_partition_rows": 0})
    more = write_csv(make_trips(6, 2000), tmp_path / "b.csv")
    area = AREAS["polygon"]
    before = await _counts(stored, area, "either", None)
    done: list[str] = []
    job = threading.Thread(target=lambda: done.append(ingest(stored, big, more)["state"]))

    def start_job_and_see_it_wait() -> None:
        job.start()
        with psycopg.connect(stored, autocommit=True) as watch:
            deadline = time.monotonic() + 60
            while not watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE '%ATTACH PARTITION%'"
            ).fetchone():
                assert job.is_alive() and time.monotonic() < deadline, "the attach never waited"
                time.sleep(0.05)

    spare = Spares(stored, before=start_job_and_see_it_wait)
    during = await _counts(stored, area, "either", spare)
    job.join(60)
    assert done == ["succeeded"]
    after = await _counts(stored, area, "either", None)
    assert sum(after.values()) > sum(before.values())
    assert during == before


async def test_a_connection_without_autocommit_is_left_idle(stored: str) -> None:
    """The read's own transaction, and the check after it, end: the caller's connection is
    idle again, with the same answer as an autocommit one."""
    area = AREAS["box"]
    want = await _counts(stored, area, "origin", None)
    async with await psycopg.AsyncConnection.connect(stored) as conn:
        got = await weekly.weekly_counts(
            conn, regions=None, area=area, match="origin", w0=W0, w1=W1
        )
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert got == want


@pytest.mark.parametrize("kind", list(AREAS))
async def test_both_and_either_read_without_parallel_workers(
    stored: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`both` and `either` parts run with max_parallel_workers_per_gather = 0 on both
    connections; origin and destination parts keep the server's setting."""
    seen: dict[str, set[str]] = {}
    match = ""
    real = weekly._rows

    async def spy(conn: psycopg.AsyncConnection, part: weekly.Part) -> Counter[date]:
        cur = await conn.execute("SELECT current_setting('max_parallel_workers_per_gather')")
        seen.setdefault(match, set()).add((await cur.fetchone())[0])  # type: ignore[index]
        return await real(conn, part)

    monkeypatch.setattr(weekly, "_rows", spy)
    default = query(stored, "SELECT current_setting('max_parallel_workers_per_gather') AS v")
    for match in ("origin", "destination", "both", "either"):
        await _counts(stored, AREAS[kind], match, Spares(stored))
    assert seen["both"] == seen["either"] == {"0"}
    assert seen["origin"] == seen["destination"] == {default[0]["v"]} != {"0"}
