"""The original service's /vehicles routes, same paths, parameters and keys (typed values)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse

from service.analytics import vehicles as q
from service.api.deps import get_settings, require_writer
from service.api.errors import BadRequest, NotFound
from service.settings import Settings

router = APIRouter(prefix="/vehicles", tags=["vehicles (original contract)"])
MAX_LIMIT = 10_000
COUNTABLE = ("region", "datasource")


def _coord(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        float(value.rstrip("."))
    except ValueError:
        raise BadRequest(f"{name} must be a number (or the start of one), got {value!r}") from None
    return value


@router.get("", responses={400: {"description": "a coordinate filter that is not a number"}})
async def list_vehicles(
    request: Request,
    region: str | None = None,
    datasource: str | None = None,
    origin_coord_x: str | None = Query(None, max_length=40, description="prefix of the longitude"),
    origin_coord_y: str | None = Query(None, max_length=40),
    destination_coord_x: str | None = Query(None, max_length=40),
    destination_coord_y: str | None = Query(None, max_length=40),
    origin_coord_point_x: str | None = Query(None, max_length=40, include_in_schema=False),
    origin_coord_point_y: str | None = Query(None, max_length=40, include_in_schema=False),
    destination_coord_point_x: str | None = Query(None, max_length=40, include_in_schema=False),
    destination_coord_point_y: str | None = Query(None, max_length=40, include_in_schema=False),
    date: date | None = Query(None, description="trips on this day (YYYY-MM-DD)"),  # noqa: A002
    limit: int = Query(10, ge=1, description=f"at most {MAX_LIMIT} (larger values are capped)"),
) -> dict[str, list[dict[str, Any]]]:
    """Trips filtered as in the original service; `limit` defaults to 10."""
    async with request.app.state.pool.connection() as conn:
        rows = await q.list_vehicles(
            conn,
            region=region,
            datasource=datasource,
            ox=_coord(origin_coord_x or origin_coord_point_x, "origin_coord_x"),
            oy=_coord(origin_coord_y or origin_coord_point_y, "origin_coord_y"),
            dx=_coord(destination_coord_x or destination_coord_point_x, "destination_coord_x"),
            dy=_coord(destination_coord_y or destination_coord_point_y, "destination_coord_y"),
            day=date,
            limit=min(limit, MAX_LIMIT),
        )
    return {"data": rows}


@router.get("/ingest-data/status")
async def ingest_status(request: Request) -> dict[str, Any]:
    """A snapshot of ingestion, in the original's shape (`review`, times, `lead_time`)."""
    async with request.app.state.pool.connection() as conn:
        rows = {r["state"]: r for r in await q.ingest_status(conn)}
    if not rows:
        return {"review": "Nothing in processing"}
    active = sum(rows[s]["jobs"] for s in ("queued", "running") if s in rows)
    starts = [r["start_time"] for r in rows.values() if r["start_time"]]
    ends = [r["end_time"] for r in rows.values() if r["end_time"]]
    start, end = (min(starts) if starts else None), (max(ends) if ends else None)
    return {
        "review": "In processing" if active else "Process Finished",
        "start_time": start.isoformat() if start else None,
        "end_time": end.isoformat() if end and not active else None,
        "lead_time": str(end - start) if start and end and not active else None,
        "jobs": {state: rows[state]["jobs"] for state in rows},
    }


@router.get("/weekly_trips/region")
async def weekly_trips(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Trips per ISO week and region (`week` is the week's Monday)."""
    async with request.app.state.pool.connection() as conn:
        return {"data": await q.weekly_trips(conn)}


@router.get("/weekly_avg_trips/region")
async def weekly_avg_trips(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Average trips per week with trips, per region (the original's definition)."""
    async with request.app.state.pool.connection() as conn:
        return {"data": await q.weekly_avg(conn)}


@router.get("/{column}/count", responses={400: {}})
async def count_by(request: Request, column: str) -> dict[str, list[dict[str, Any]]]:
    """Trips per region or per datasource."""
    if column not in COUNTABLE:
        raise BadRequest(f"can count by {' or '.join(COUNTABLE)} only, not {column!r}")
    async with request.app.state.pool.connection() as conn:
        return {"data": await q.count_by(conn, column)}


@router.get("/{trip_id:int}", responses={404: {}})
async def get_vehicle(
    request: Request, trip_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> dict[str, Any]:
    """One trip by id."""
    async with request.app.state.pool.connection() as conn:
        row = await q.get_vehicle(conn, trip_id)
    if row is None:
        raise NotFound(f"no vehicle record {trip_id}")
    return row


@router.post("", dependencies=[Depends(require_writer)], response_class=PlainTextResponse)
async def ingest_all(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> str:
    """Queue every CSV in the data dir (already ingested bytes are skipped); answers as before."""
    from service.ingest.inbox import enqueue_dir

    await anyio.to_thread.run_sync(enqueue_dir, request.app.state.database_url, settings.data_dir)
    return "Ingestion Started"
