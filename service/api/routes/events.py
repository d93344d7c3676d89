"""Ingestion events as Server-Sent Events: every job, or one job (which ends when the job does).

A stream resumes after `Last-Event-ID` (or `?last_event_id=` for clients that cannot set
headers): first the missed events from the table, then live ones from the process's one
listener (`app.state.hub`), with no gap and no duplicate across the switch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from service.api.errors import BadRequest, NotFound
from service.events.hub import TERMINAL, Event, Hub, replay, stream
from service.ingest import queries

router = APIRouter(prefix="/ingestions", tags=["ingestions"])
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
LastEventIdQuery = Annotated[
    int | None,
    Query(
        ge=0, le=2**63 - 1, description="resume after this event id (when a header cannot be set)"
    ),
]
LastEventIdHeader = Annotated[
    str | None,
    Header(alias="Last-Event-ID", description="resume after this event id (sent by EventSource)"),
]
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a stream of `queued`, `started`, `progress`, `succeeded` and `failed` "
        "events; `data` is JSON with `job_id`",
        "content": {"text/event-stream": {}},
    }
}


def _resume_after(header: str | None, query: int | None) -> int | None:
    """The header wins: a browser that reconnects sends it, while its URL keeps the old query."""
    if header is not None and header.strip():
        value = header.strip()
        if not value.isdigit() or int(value) > 2**63 - 1:
            raise BadRequest("Last-Event-ID must be an event id (a non-negative integer)")
        return int(value)
    return query


def _respond(events: AsyncIterator[Event]) -> StreamingResponse:
    """Each frame (`id:`, `event:`, `data:` JSON, or a heartbeat comment) was encoded once by the
    hub. A plain streaming response: one send per frame and a disconnect watcher, nothing else
    per client, so hundreds of streams cost little; the hub's one timer sends the heartbeats."""

    async def frames() -> AsyncIterator[bytes]:
        async for ev in events:
            yield ev.frame

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/events", response_class=StreamingResponse, responses=SSE_DOC)
async def all_events(
    request: Request,
    last_event_id: LastEventIdQuery = None,
    last_event_id_header: LastEventIdHeader = None,
) -> StreamingResponse:
    """Events of every job: live ones, or everything after `Last-Event-ID` and then live ones."""
    hub: Hub = request.app.state.hub
    after = _resume_after(last_event_id_header, last_event_id)
    return _respond(stream(hub, request.app.state.pool, None, after, heartbeats=True))


@router.get(
    "/{job_id:int}/events", response_class=StreamingResponse, responses={**SSE_DOC, 404: {}}
)
async def job_events(
    request: Request,
    job_id: JobId,
    last_event_id: LastEventIdQuery = None,
    last_event_id_header: LastEventIdHeader = None,
) -> StreamingResponse:
    """One job's events from its first (or after `Last-Event-ID`); ends with the job."""
    hub: Hub = request.app.state.hub
    pool = request.app.state.pool
    after = _resume_after(last_event_id_header, last_event_id) or 0
    async with pool.connection() as conn:
        job = await queries.get_job(conn, job_id)
    if job is None:
        raise NotFound(f"no ingestion job {job_id}")
    if job["state"] in TERMINAL:
        # Its final event committed with its state: the table holds the whole story.
        return _respond(replay(pool, after, job_id))
    return _respond(stream(hub, pool, job_id, after, until_terminal=True, heartbeats=True))
