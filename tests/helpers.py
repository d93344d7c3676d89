"""Test helpers: wait on the database's own events, never on sleep."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from service.ingest import jobs
from service.ingest.worker import run_one
from service.settings import Settings

FINAL = ("succeeded", "failed")


def wait_for_job(
    url: str, job_id: int, states: tuple[str, ...] = FINAL, timeout: float = 60.0
) -> dict[str, Any]:
    """Block until the job reaches one of `states`, woken by its NOTIFY events."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN trips_events")
        while True:
            job = jobs.get_job(conn, job_id)
            if job and job["state"] in states:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} still {job and job['state']} after {timeout}s")
            for _ in conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                pass


def ingest(url: str, settings: Settings, path: Path, force: bool = False) -> dict[str, Any]:
    """Queue a file and load it in this process; returns the job as it ended."""
    with psycopg.connect(url, autocommit=True) as conn:
        job, created = jobs.enqueue(conn, path, path.name, force)
        if not created:
            return job
        claimed = jobs.claim(conn, job["id"])
    assert claimed is not None
    return run_one(url, settings, claimed)


def query(url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()
