"""Prometheus metrics: request latency (middleware), jobs by state and rows ingested (from the
database at scrape time, so every worker's work is counted, whichever process did it)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _DbCollector:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int]] = []

    def collect(self) -> Any:
        jobs = GaugeMetricFamily(
            "trips_ingestion_jobs", "Ingestion jobs by state", labels=["state"]
        )
        rows = GaugeMetricFamily("trips_rows_ingested", "Trip rows loaded by succeeded jobs")
        total = 0
        for state, n, loaded in self.rows:
            jobs.add_metric([state], n)
            total += loaded if state == "succeeded" else 0
        rows.add_metric([], total)
        yield jobs
        yield rows


class _Timing:
    """Request latency as a pure ASGI middleware: unlike `@app.middleware("http")` it lets a
    streamed body (hundreds of SSE streams) pass straight through, at no cost per chunk."""

    def __init__(self, app: ASGIApp, latency: Histogram):
        self.app, self.latency = app, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                path = getattr(scope.get("route"), "path", "unmatched")
                self.latency.labels(scope["method"], path, str(message["status"])).observe(
                    time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, timed_send)


def install(app: FastAPI) -> None:
    registry = CollectorRegistry()
    latency = Histogram(
        "trips_http_request_seconds",
        "HTTP request latency",
        ["method", "route", "status"],
        registry=registry,
    )
    collector = _DbCollector()
    registry.register(collector)
    app.state.metrics_registry = registry

    app.add_middleware(_Timing, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        async with request.app.state.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT state, count(*), coalesce(sum(rows_loaded), 0) FROM ingestion_jobs "
                "GROUP BY state"
            )
            collector.rows = [(s, int(n), int(r)) for s, n, r in await cur.fetchall()]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
