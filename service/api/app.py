"""The app factory. No I/O at import: the lifespan opens the pool, starts worker and watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import FastAPI

from service.analytics import columns
from service.api import errors, metrics
from service.events.hub import Hub
from service.settings import Settings

log = logging.getLogger("trips.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from service.db.migrate import migrate
        from service.db.pool import open_async_pool

        url = await anyio.to_thread.run_sync(settings.resolved_database_url)
        await anyio.to_thread.run_sync(migrate, url)
        await anyio.to_thread.run_sync(_sync_cluster_params, url, settings)
        app.state.database_url = url
        app.state.pool = await open_async_pool(settings, url)
        await app.state.hub.start(url)
        tasks: list[asyncio.Task[None]] = []
        worker = None
        try:
            if settings.worker_enabled:
                from service.ingest.worker import start_background

                worker, _ = start_background(url, settings)
            if settings.watch_inbox:
                from service.ingest.inbox import watch_inbox

                tasks.append(asyncio.create_task(watch_inbox(url, settings)))
            store = columns.configure(settings.columns_dir)
            if store is not None and settings.columns_build:
                tasks.append(asyncio.create_task(_build_columns(url, store, app.state.hub)))
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if worker is not None:
                worker.stop()
            await app.state.hub.stop()
            await app.state.pool.close()
            columns.configure(None)

    app = FastAPI(
        title="Trips service",
        version="0.1.0",
        description="Trip ingestion into PostGIS, similar-trip clusters, weekly averages, "
        "ingestion status as Server-Sent Events.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.hub = Hub()  # the one event listener; its connection opens in the lifespan
    errors.install(app)
    metrics.install(app)
    _configure_api_log(settings)

    from service.analytics.features import SummaryCache
    from service.api.routes import (
        clusters,
        events,
        ingestions,
        ogc,
        ops,
        stats,
        tiles,
        trips,
        vehicles,
    )
    from service.web import page

    for module in (ops, ingestions, events, vehicles, stats, clusters, trips, ogc, tiles):
        app.include_router(module.router)
    app.state.ogc_summary = SummaryCache()  # the trips' extents, per store version
    page.install(app)
    return app


# After a failed build, the next attempt waits for the next job, or this long.
COLUMNS_RETRY_S = 300.0


async def _build_columns(url: str, store: columns.Store, hub: Hub) -> None:
    """Build the columnar copies the store lacks: at start, then after each job that succeeds
    (its event, relayed by the hub), one table after another in a thread. Reads use a table's
    copy only once every job table has one, and PostgreSQL alone until then."""
    wake = asyncio.Event()

    def watch(event: Any) -> None:
        if event.type == "succeeded":
            wake.set()

    hub.watchers.append(watch)
    try:
        while True:
            wake.clear()
            try:
                await _daemon_thread(columns.build_missing, url, store)
            except Exception:
                log.exception("columnar copies: build failed; reads stay on PostgreSQL")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COLUMNS_RETRY_S):
                    await wake.wait()
    finally:
        hub.watchers.remove(watch)


def _daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """fn(*args) in a daemon thread: a shutdown does not wait for a build (whose temporary
    directory the next build's prune removes)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting task
            error = e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, daemon=True, name="trips-columns").start()
    return future


def _sync_cluster_params(url: str, settings: Settings) -> None:
    import psycopg

    from service.analytics.clusters import sync_params

    with psycopg.connect(url, autocommit=True) as conn:
        sync_params(conn, settings)


def _configure_api_log(settings: Settings) -> None:
    """api.log in the original service's format."""
    if not settings.api_log:
        return
    logger = logging.getLogger("trips")
    target = str(settings.api_log.resolve())
    if any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
        return
    handler = logging.FileHandler(target)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s :: %(levelname)s :: %(filename)s :: %(lineno)d :: %(message)s"
        )
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
