"""Reads of jobs and rejections for the API (async)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from service.ingest.jobs import JOB_COLUMNS

# JOB_COLUMNS is a module constant; every value is a bound parameter.
LIST_JOBS = f"""
    SELECT {JOB_COLUMNS} FROM ingestion_jobs
    WHERE (%(before)s::bigint IS NULL OR id < %(before)s)
      AND (%(state)s::text IS NULL OR state = %(state)s)
    ORDER BY id DESC LIMIT %(limit)s
"""  # noqa: S608
GET_JOB = f"SELECT {JOB_COLUMNS} FROM ingestion_jobs WHERE id = %(id)s"  # noqa: S608
REJECTIONS = """
    SELECT line, reason, raw FROM ingestion_rejections
    WHERE job_id = %(id)s AND line > %(after)s ORDER BY line LIMIT %(limit)s
"""
ENQUEUE = "SELECT job_id, created FROM enqueue_ingestion(%s, %s, %s, %s, %s)"


async def list_jobs(
    conn: AsyncConnection, limit: int, before: int | None, state: str | None
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LIST_JOBS, {"limit": limit, "before": before, "state": state})
        return list(await cur.fetchall())


async def get_job(conn: AsyncConnection, job_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(GET_JOB, {"id": job_id})
        return await cur.fetchone()


async def rejections(
    conn: AsyncConnection, job_id: int, after: int, limit: int
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(REJECTIONS, {"id": job_id, "after": after, "limit": limit})
        return list(await cur.fetchall())


async def enqueue(
    conn: AsyncConnection, source: str, path: str, sha256: str, size: int, force: bool
) -> tuple[int, bool]:
    cur = await conn.execute(ENQUEUE, [source, path, sha256, size, force])
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])
