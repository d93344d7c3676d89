"""A real uvicorn server in the test's own event loop, and an SSE reader with timeouts.

Infinite responses do not stream through httpx's ASGITransport, so these tests talk HTTP to a
server on a free loopback port; sharing the loop lets a test await the hub's own state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from service.api.app import create_app
from service.events.client import SseEvent, SseParser
from service.settings import Settings

TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings, heartbeat_s: float = 15.0
) -> AsyncIterator[tuple[str, FastAPI]]:
    app = create_app(settings)
    app.state.hub.heartbeat_s = heartbeat_s
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=3
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    main = asyncio.create_task(server.main_loop())
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await main
        await server.shutdown()


class SseStream:
    """One open SSE request; `next()` and `until()` wait with a timeout, never a sleep."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None):
        self.client, self.url, self.headers = client, url, headers or {}
        self.parser = SseParser()
        self.ended = False

    async def __aenter__(self) -> SseStream:
        self._cm = self.client.stream("GET", self.url, headers=self.headers)
        self.response = await self._cm.__aenter__()
        self.response.raise_for_status()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)

    async def _next(self) -> SseEvent | None:
        async for line in self._lines:
            event = self.parser.feed(line)
            if event is not None:
                return event
        self.ended = True
        return None

    async def next(self, timeout: float = TIMEOUT) -> SseEvent | None:
        """The next event, or None when the server ended the stream."""
        return await asyncio.wait_for(self._next(), timeout)

    async def until(
        self, done: Callable[[SseEvent], bool], timeout: float = TIMEOUT
    ) -> list[SseEvent]:
        """Events up to and including the first for which `done` is true."""

        async def _collect() -> list[SseEvent]:
            got: list[SseEvent] = []
            while (event := await self._next()) is not None:
                got.append(event)
                if done(event):
                    return got
            raise AssertionError(f"stream ended before the awaited event; got {got}")

        return await asyncio.wait_for(_collect(), timeout)

    async def rest(self, timeout: float = TIMEOUT) -> list[SseEvent]:
        """Every event until the server ends the stream."""

        async def _collect() -> list[SseEvent]:
            got = []
            while (event := await self._next()) is not None:
                got.append(event)
            return got

        return await asyncio.wait_for(_collect(), timeout)

    async def comments(self, n: int, timeout: float = TIMEOUT) -> None:
        """Wait until `n` comment lines (heartbeats) have arrived."""

        async def _read() -> None:
            async for line in self._lines:
                self.parser.feed(line)
                if self.parser.comments >= n:
                    return

        await asyncio.wait_for(_read(), timeout)


def terminal_of(job_id: int) -> Callable[[SseEvent], bool]:
    return lambda e: e.type in ("succeeded", "failed") and e.json()["job_id"] == job_id
