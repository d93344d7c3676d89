"""Jobs are rows: enqueue (deduplicated by sha256), claim with SKIP LOCKED, heartbeat, recover."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from service.events.store import notify_jobs, write_event

JOB_COLUMNS = (
    "id, source, sha256, bytes, state, rows_read, rows_loaded, rows_rejected, bytes_read, "
    "ignored_columns, error, attempts, force, created_at, started_at, finished_at"
)

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Job:
    id: int
    path: str
    source: str
    bytes: int
    attempts: int


def sha256_of(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def get_job(conn: Connection, job_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {JOB_COLUMNS} FROM ingestion_jobs WHERE id = %s",  # noqa: S608
            [job_id],
        )  # JOB_COLUMNS is a constant; values are bound
        return cur.fetchone()


def enqueue(
    conn: Connection,
    path: Path,
    source: str | None = None,
    force: bool = False,
    digest: tuple[str, int] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue a file. Returns (job, created); the same bytes answer the earlier job unless forced."""
    sha, size = digest or sha256_of(path)
    row = conn.execute(
        "SELECT job_id, created FROM enqueue_ingestion(%s, %s, %s, %s, %s)",
        [source or path.name, str(path), sha, size, force],
    ).fetchone()
    assert row is not None
    job = get_job(conn, row[0])
    assert job is not None
    return job, bool(row[1])


def claim(conn: Connection, job_id: int | None = None) -> Job | None:
    """Take the oldest queued job (or the given one) for this worker, atomically."""
    with conn.transaction():
        row = conn.execute(
            """SELECT id, path, source, bytes, attempts FROM ingestion_jobs
               WHERE state = 'queued' AND (%(id)s::bigint IS NULL OR id = %(id)s)
               ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""",
            {"id": job_id},
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            """UPDATE ingestion_jobs SET state = 'running', attempts = attempts + 1,
                   worker = %s, heartbeat_at = now(), started_at = now(), error = NULL,
                   rows_read = 0, rows_loaded = 0, rows_rejected = 0, bytes_read = 0
               WHERE id = %s""",
            [WORKER_NAME, row[0]],
        )
        write_event(conn, row[0], "started", {"attempt": row[4] + 1, "worker": WORKER_NAME})
    return Job(id=row[0], path=row[1], source=row[2], bytes=row[3], attempts=row[4] + 1)


def heartbeat(conn: Connection, job: Job, backend_pid: int | None = None) -> bool:
    """Refresh the job's heartbeat; False when the job is no longer ours (fenced)."""
    cur = conn.execute(
        """UPDATE ingestion_jobs SET heartbeat_at = now(),
               backend_pid = coalesce(%s, backend_pid)
           WHERE id = %s AND state = 'running' AND attempts = %s""",
        [backend_pid, job.id, job.attempts],
    )
    return cur.rowcount == 1


def progress(conn: Connection, job: Job, counts: dict[str, Any]) -> None:
    """Record progress counts and a progress event (autocommit, a few times a second)."""
    with conn.transaction():
        cur = conn.execute(
            """UPDATE ingestion_jobs SET rows_read = %s, rows_loaded = %s, rows_rejected = %s,
                   bytes_read = %s, heartbeat_at = now()
               WHERE id = %s AND state = 'running' AND attempts = %s""",
            [
                counts["rows_read"],
                counts["rows_loaded"],
                counts["rows_rejected"],
                counts["bytes_read"],
                job.id,
                job.attempts,
            ],
        )
        if cur.rowcount == 1:
            write_event(conn, job.id, "progress", counts)


def finish_succeeded(conn: Connection, job: Job, counts: dict[str, Any]) -> None:
    """Mark success inside the load transaction (so trips and state commit together)."""
    cur = conn.execute(
        """UPDATE ingestion_jobs SET state = 'succeeded', rows_read = %s, rows_loaded = %s,
               rows_rejected = %s, bytes_read = %s, finished_at = clock_timestamp(),
               backend_pid = NULL
           WHERE id = %s AND state = 'running' AND attempts = %s""",
        [
            counts["rows_read"],
            counts["rows_loaded"],
            counts["rows_rejected"],
            counts["bytes_read"],
            job.id,
            job.attempts,
        ],
    )
    if cur.rowcount != 1:
        raise JobLost(f"job {job.id} attempt {job.attempts} is no longer ours")
    write_event(conn, job.id, "succeeded", counts)


def finish_failed(
    conn: Connection, job: Job, error: str, retriable: bool = False, max_attempts: int = 3
) -> str:
    """Fail (or requeue, when retriable and attempts remain) in a transaction of its own."""
    with conn.transaction():
        requeue = retriable and job.attempts < max_attempts
        state = "queued" if requeue else "failed"
        cur = conn.execute(
            """UPDATE ingestion_jobs SET state = %s, error = %s, backend_pid = NULL,
                   finished_at = CASE WHEN %s = 'failed' THEN clock_timestamp() END
               WHERE id = %s AND state = 'running' AND attempts = %s""",
            [state, error, state, job.id, job.attempts],
        )
        if cur.rowcount == 1:
            if requeue:
                write_event(conn, job.id, "queued", {"retry": True, "error": error})
                notify_jobs(conn)
            else:
                write_event(conn, job.id, "failed", {"error": error})
    return state


def recover_stale(conn: Connection, stale_after_s: float, max_attempts: int) -> list[int]:
    """Jobs whose worker stopped heart-beating go back to the queue, or fail after max attempts.

    The dead worker's backend (which may still be building an index) is terminated first, so
    its transaction rolls back and cannot commit a job that is no longer its own.
    """
    recovered = []
    with conn.transaction():
        rows = conn.execute(
            """SELECT id, attempts, backend_pid FROM ingestion_jobs
               WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => %s)
               FOR UPDATE SKIP LOCKED""",
            [stale_after_s],
        ).fetchall()
        for job_id, attempts, pid in rows:
            if pid:
                # ::integer: Citus adds pg_terminate_backend(bigint, …), and a small pid sent
                # as smallint would match both.
                conn.execute("SELECT pg_terminate_backend(%s::integer)", [pid])
            reason = f"worker lost (no heartbeat for {stale_after_s:g} s)"
            if attempts < max_attempts:
                conn.execute(
                    """UPDATE ingestion_jobs SET state = 'queued', error = %s, backend_pid = NULL
                       WHERE id = %s""",
                    [reason, job_id],
                )
                write_event(conn, job_id, "queued", {"retry": True, "error": reason})
            else:
                conn.execute(
                    """UPDATE ingestion_jobs SET state = 'failed', error = %s, backend_pid = NULL,
                       finished_at = clock_timestamp() WHERE id = %s""",
                    [f"{reason}; gave up after {attempts} attempts", job_id],
                )
                write_event(conn, job_id, "failed", {"error": reason})
            recovered.append(job_id)
        if recovered:
            notify_jobs(conn)
    return recovered


class JobLost(RuntimeError):
    """This worker's claim on a job was taken away (recovered as stale)."""


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None
