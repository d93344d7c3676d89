"""Writing and reading ingestion events.

An event is a row of `ingestion_events`, written in the transaction of the state it reports, and
announced with pg_notify('trips_events', id) (db/migrations/003_job_functions.sql).
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection, Connection

CHANNEL = "trips_events"
JOBS_CHANNEL = "trips_jobs"
EVENT_TYPES = ("queued", "started", "progress", "succeeded", "failed")

SELECT_AFTER = """
    SELECT id, job_id, type, payload, created_at FROM ingestion_events
    WHERE id > %(after)s AND (%(job_id)s::bigint IS NULL OR job_id = %(job_id)s)
    ORDER BY id LIMIT %(limit)s
"""


def write_event(
    conn: Connection, job_id: int, type_: str, payload: dict[str, Any] | None = None
) -> int:
    """Insert an event and NOTIFY its id (SQL function ingestion_event); call it last in the
    caller's transaction, since it takes the event-order lock until commit."""
    assert type_ in EVENT_TYPES
    row = conn.execute(
        "SELECT ingestion_event(%s, %s, %s::jsonb)",
        [job_id, type_, orjson.dumps(payload or {}).decode()],
    ).fetchone()
    assert row is not None
    return int(row[0])


async def read_after(
    conn: AsyncConnection, after: int, job_id: int | None = None, limit: int = 1000
) -> list[tuple[int, int, str, dict[str, Any], Any]]:
    cur = await conn.execute(SELECT_AFTER, {"after": after, "job_id": job_id, "limit": limit})
    return list(await cur.fetchall())


async def last_event_id(conn: AsyncConnection) -> int:
    """The highest event id committed so far (0 for none): where a live-only stream starts."""
    cur = await conn.execute("SELECT coalesce(max(id), 0) FROM ingestion_events")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def notify_jobs(conn: Connection) -> None:
    """Wake idle workers: a job was queued."""
    conn.execute("SELECT pg_notify(%s, '')", [JOBS_CHANNEL])
