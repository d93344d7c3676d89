"""Prometheus metrics: request latency (middleware), jobs by state and rows ingested (from the
database at scrape time, so every worker's work is counted, whichever process did it)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily


class _DbCollector:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int]] = []

    def collect(self):  # type: ignore[no-untyped-def]
        jobs = GaugeMetricFamily("trips_ingestion_jobs", "Ingestion jobs by state", labels=["state"])
        rows = GaugeMetricFamily("trips_rows_ingested", "Trip rows loaded by succeeded jobs")
        total = 0
        for state, n, loaded in self.rows:
            jobs.add_metric([state], n)
            total += loaded if state == "succeeded" else 0
        rows.add_metric([], total)
        yield jobs
        yield rows


def install(app: FastAPI) -> None:
    registry = CollectorRegistry()
    latency = Histogram("trips_http_request_seconds", "HTTP request latency",
                        ["method", "route", "status"], registry=registry)
    collector = _DbCollector()
    registry.register(collector)  # type: ignore[arg-type]
    app.state.metrics_registry = registry

    @app.middleware("http")
    async def _timing(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(request.method, path, str(response.status_code)).observe(
            time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        async with request.app.state.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT state, count(*), coalesce(sum(rows_loaded), 0) FROM ingestion_jobs "
                "GROUP BY state")
            collector.rows = [(s, int(n), int(r)) for s, n, r in await cur.fetchall()]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
