"""Ingestion jobs: upload or name a file, list jobs, read one and its rejections."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.api.deps import get_settings, require_writer
from service.api.errors import BadRequest, NotFound
from service.ingest import queries
from service.ingest.uploads import digest_inside, receive_multipart, resolve_inside
from service.settings import Settings

router = APIRouter(prefix="/ingestions", tags=["ingestions"])
# Above its maximum a `limit` is capped, not refused (NOTES-limits.md): every listing route.
MAX_LIMIT = 1000
MAX_REJECTIONS = 10_000
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class JobOut(BaseModel):
    id: int
    source: str
    sha256: str
    bytes: int
    state: Literal["queued", "running", "succeeded", "failed"]
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    bytes_read: int
    ignored_columns: list[str]
    error: str | None
    attempts: int
    force: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    events_url: str
    rejections_url: str


class PathRequest(BaseModel):
    path: str = Field(description="a file inside the data dir (TRIPS_DATA_DIR)")
    force: bool = False


class Rejection(BaseModel):
    line: int
    reason: str
    raw: str


def job_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "events_url": f"/ingestions/{row['id']}/events",
        "rejections_url": f"/ingestions/{row['id']}/rejections",
    }


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(require_writer)],
    responses={
        200: {"model": JobOut, "description": "these bytes were ingested before"},
        400: {},
        401: {},
        403: {},
        404: {},
        413: {},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
                "application/json": {"schema": PathRequest.model_json_schema()},
            }
        }
    },
)
async def create_ingestion(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    force: bool = Query(False, description="ingest even if these bytes were ingested before"),
) -> JSONResponse:
    """Queue a file: a multipart upload (field `file`) or JSON `{"path": ...}` in the data dir."""
    ctype = request.headers.get("content-type", "")
    max_bytes = settings.max_upload_mb << 20
    if ctype.startswith("multipart/"):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes + (64 << 10):
            from service.api.errors import TooLarge

            raise TooLarge(f"upload larger than {settings.max_upload_mb} MB (TRIPS_MAX_UPLOAD_MB)")
        up = await receive_multipart(ctype, request.stream(), settings.uploads.resolve(), max_bytes)
        source, path, sha, size = up.filename, up.path, up.sha256, up.bytes
    elif ctype.startswith("application/json"):
        raw = await request.body()
        try:
            body = PathRequest.model_validate(orjson.loads(raw))
        except Exception as e:
            raise BadRequest(f'JSON body must be {{"path": "file.csv"}}: {e}') from e
        path = await anyio.to_thread.run_sync(resolve_inside, settings.data_dir, body.path)
        force = force or body.force
        sha, size = await anyio.to_thread.run_sync(digest_inside, path, body.path)
        source = body.path
    else:
        raise BadRequest("send multipart/form-data with a 'file' field, or JSON {\"path\": ...}")
    async with request.app.state.pool.connection() as conn:
        job_id, created = await queries.enqueue(conn, source, str(path), sha, size, force)
        row = await queries.get_job(conn, job_id)
    if not created and ctype.startswith("multipart/"):
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
    assert row is not None
    return JSONResponse(
        JobOut.model_validate(job_out(row)).model_dump(mode="json"),
        status_code=202 if created else 200,
    )


@router.get("", response_model=list[JobOut])
async def list_ingestions(
    request: Request,
    limit: int = Query(100, ge=1, description=f"at most {MAX_LIMIT} (larger values are capped)"),
    before: int | None = Query(None, ge=1, le=2**63 - 1, description="ids below this (paging)"),
    state: Literal["queued", "running", "succeeded", "failed"] | None = None,
) -> list[dict[str, Any]]:
    """Jobs, newest first."""
    async with request.app.state.pool.connection() as conn:
        rows = await queries.list_jobs(conn, min(limit, MAX_LIMIT), before, state)
    return [job_out(r) for r in rows]


@router.get("/{job_id:int}", response_model=JobOut, responses={404: {}})
async def get_ingestion(request: Request, job_id: JobId) -> dict[str, Any]:
    """One job."""
    async with request.app.state.pool.connection() as conn:
        row = await queries.get_job(conn, job_id)
    if row is None:
        raise NotFound(f"no ingestion job {job_id}")
    return job_out(row)


@router.get("/{job_id:int}/rejections", response_model=list[Rejection], responses={404: {}})
async def get_rejections(
    request: Request,
    job_id: JobId,
    after_line: int = Query(0, ge=0, le=2**63 - 1),
    limit: int = Query(
        1000, ge=1, description=f"at most {MAX_REJECTIONS} (larger values are capped)"
    ),
) -> list[dict[str, Any]]:
    """Rejected rows of a job: line (1-based), reason, raw text; paged by line."""
    async with request.app.state.pool.connection() as conn:
        if await queries.get_job(conn, job_id) is None:
            raise NotFound(f"no ingestion job {job_id}")
        return await queries.rejections(conn, job_id, after_line, min(limit, MAX_REJECTIONS))
