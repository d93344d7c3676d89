"""One LISTEN connection per process, fanned out to every subscriber through in-process queues.

The listener is a dedicated autocommit connection that LISTENs on `trips_events`. A notification
carries only an event id; on one the hub reads every event after the last id it has dispatched
from `ingestion_events` and hands each to the subscribers' bounded queues. Because event ids
become visible in increasing order (the advisory lock in `ingestion_event()`), "everything after
the last id seen" has no gaps, so a lost connection, a missed or coalesced notification, or a
slow subscriber costs latency, never events: the hub reconnects with backoff and catches up from
the table; a subscriber whose queue overflowed resyncs from the table by its own last id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from service.events.store import CHANNEL, last_event_id, read_after

log = logging.getLogger("trips.events")
TERMINAL = ("succeeded", "failed")
APPLICATION_NAME = "trips-events-listener"
# TCP keepalive on the listener: a peer that vanished without a FIN is noticed within ~25 s.
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    job_id: int
    type: str
    data: str  # the payload as JSON text (one line)
    frame: bytes  # the whole SSE frame, encoded once however many subscribers send it

    @classmethod
    def from_row(cls, row: tuple[int, int, str, dict[str, Any], Any]) -> Event:
        id_, type_, data = int(row[0]), str(row[2]), orjson.dumps(row[3]).decode()
        frame = f"id: {id_}\r\nevent: {type_}\r\ndata: {data}\r\n\r\n".encode()
        return cls(id=id_, job_id=int(row[1]), type=type_, data=data, frame=frame)


HEARTBEAT = Event(id=0, job_id=0, type="heartbeat", data="", frame=b": heartbeat\r\n\r\n")


class Subscription:
    """A subscriber's bounded queue; the hub never waits on it."""

    def __init__(self, job_id: int | None, maxsize: int):
        self.job_id = job_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.closed = False

    def offer(self, event: Event) -> None:
        if self.job_id is not None and event.job_id != self.job_id:
            return
        if self.overflowed:
            return  # the subscriber will resync from the table
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def ping(self) -> None:
        """Queue a heartbeat comment (skipped when the queue is busy: it has data to send)."""
        if self.queue.empty():
            self.queue.put_nowait(HEARTBEAT)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)  # a full queue wakes its reader anyway


class Hub:
    """The listener and its subscribers: built with the app (no I/O), started by its lifespan."""

    def __init__(
        self,
        *,
        queue_size: int = 256,
        heartbeat_s: float = 15.0,
        idle_check_s: float = 10.0,
        max_backoff_s: float = 5.0,
    ):
        self.url = ""
        self.heartbeat_s = heartbeat_s  # SSE comment lines on idle streams
        self.queue_size = queue_size
        self.idle_check_s = idle_check_s
        self.max_backoff_s = max_backoff_s
        self.last_id: int | None = None  # the highest event id dispatched
        self.connects = 0  # successful (re)connections, for tests and metrics
        self.subscriptions: set[Subscription] = set()
        # in-process callbacks of every event dispatched (not subscribers: no queue, not
        # counted by wait_subscribers); they must not block
        self.watchers: list[Callable[[Event], None]] = []
        self.connected = asyncio.Event()
        self._changed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, url: str, wait_s: float = 30.0) -> None:
        self.url = url
        self._task = asyncio.create_task(self._run(), name="trips-events-listener")
        self._ticker = asyncio.create_task(self._heartbeats(), name="trips-events-heartbeat")
        try:
            async with asyncio.timeout(wait_s):
                await self.connected.wait()
        except TimeoutError:
            log.warning("event listener not connected yet; it keeps retrying")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close every stream and end the listener. Bounded: a shutdown never hangs on it."""
        self._stopping = True
        for sub in list(self.subscriptions):
            sub.close()
        tasks = [t for t in (self._task, self._ticker) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.warning("event listener did not stop within %.0f s", timeout_s)

    def subscribe(self, job_id: int | None = None) -> Subscription:
        sub = Subscription(job_id, self.queue_size)
        self.subscriptions.add(sub)
        self._signal()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        self._signal()

    async def wait_subscribers(self, n: int, timeout: float) -> None:
        """Wait until exactly `n` subscribers remain (tests, benchmarks)."""
        async with asyncio.timeout(timeout):
            while len(self.subscriptions) != n:
                self._changed.clear()
                await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()

    async def _heartbeats(self) -> None:
        """One timer for every stream (not a task per client): idle streams get a comment line,
        which keeps proxies from closing them and makes a vanished client's socket fail.

        It also ends the streams when the server is told to stop: uvicorn waits for open
        responses before it runs the lifespan's shutdown, and these would never end."""
        waited = 0.0
        while True:
            await asyncio.sleep(0.5)
            waited += 0.5
            if _server_exiting():
                for sub in list(self.subscriptions):
                    sub.close()
            if waited >= self.heartbeat_s:
                waited = 0.0
                for sub in self.subscriptions:
                    sub.ping()

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                conn = await AsyncConnection.connect(
                    self.url, autocommit=True, application_name=APPLICATION_NAME, **KEEPALIVE
                )
            except psycopg.OperationalError as e:
                log.warning("event listener cannot connect (%s); retry in %.1f s", e, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            try:
                async with conn:
                    # LISTEN before the catch-up: whatever commits after the read is notified.
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    if self.last_id is None:
                        self.last_id = await last_event_id(conn)
                    missed = await self._catch_up(conn)
                    if self.connects:
                        log.info("event listener reconnected; caught up %d events", missed)
                    self.connects += 1
                    self.connected.set()
                    backoff = 0.1
                    await self._listen(conn)
            except Exception as e:  # whatever broke, the listener lives on and catches up
                self.connected.clear()
                log.warning(
                    "event listener lost the database (%s: %s); reconnecting", type(e).__name__, e
                )
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _listen(self, conn: AsyncConnection[Any]) -> None:
        # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that races with
        # the awaited call finishing, and the listener would then outlive `stop()`.
        while not self._stopping:
            woken = behind = False
            async for note in conn.notifies(timeout=self.idle_check_s, stop_after=1):
                woken = True
                behind = (
                    behind or not note.payload.isdigit() or int(note.payload) > (self.last_id or 0)
                )
            # Read on news, and after a quiet spell too: a keepalive that also covers a lost
            # NOTIFY. Notifications of events already read (a backlog) cost no query.
            if behind or not woken:
                async with asyncio.timeout(self.idle_check_s):
                    await self._catch_up(conn)

    async def _catch_up(self, conn: AsyncConnection[Any]) -> int:
        """Dispatch every event after the last one dispatched; returns how many."""
        n = 0
        while True:
            rows = await read_after(conn, self.last_id or 0, None, PAGE)
            for row in rows:
                self._dispatch(Event.from_row(row))
            n += len(rows)
            if len(rows) < PAGE:
                return n

    def _dispatch(self, event: Event) -> None:
        self.last_id = event.id
        for sub in self.subscriptions:
            sub.offer(event)
        for watch in self.watchers:
            watch(event)


def _server_exiting() -> bool:
    """Whether the uvicorn server running this app was asked to exit (it owns SIGTERM)."""
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


async def stream(
    hub: Hub,
    pool: AsyncConnectionPool[Any],
    job_id: int | None,
    after: int | None,
    until_terminal: bool = False,
    heartbeats: bool = False,
) -> AsyncIterator[Event]:
    """Events after `after` (None: from now on) from the table, then live ones from the hub.

    The subscription opens before the table is read, so the two overlap rather than leave a gap;
    ids already delivered are skipped, so the overlap yields no duplicate. With `until_terminal`
    it ends after the job's `succeeded` or `failed` event. With `heartbeats`, the hub's
    `HEARTBEAT` comes through on idle streams.
    """
    sub = hub.subscribe(job_id)
    try:
        last = after if after is not None else await _position(hub, pool)
        sub.overflowed = after is not None  # start by reading the table from `after`
        while not sub.closed:
            if sub.overflowed:
                sub.overflowed = False
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                async for event in replay(pool, last, job_id):
                    last = event.id
                    yield event
                    if until_terminal and event.type in TERMINAL:
                        return
                continue
            live = await sub.queue.get()
            if live is HEARTBEAT:
                if heartbeats:
                    yield live
                continue
            if live is None or live.id <= last:
                continue
            last = live.id
            yield live
            if until_terminal and live.type in TERMINAL:
                return
    finally:
        hub.unsubscribe(sub)


async def _position(hub: Hub, pool: AsyncConnectionPool[Any]) -> int:
    if hub.last_id is not None:
        return hub.last_id
    async with pool.connection() as conn:
        return await last_event_id(conn)


async def replay(
    pool: AsyncConnectionPool[Any], after: int, job_id: int | None
) -> AsyncIterator[Event]:
    while True:
        async with pool.connection() as conn:
            rows = await read_after(conn, after, job_id, PAGE)
        for row in rows:
            event = Event.from_row(row)
            after = event.id
            yield event
        if len(rows) < PAGE:
            return
