"""The app factory. No I/O at import: the lifespan opens the pool, starts worker and watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI

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
