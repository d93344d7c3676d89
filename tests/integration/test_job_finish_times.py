"""A job's `finished_at` is the moment it finished, not the start of the transaction that
finished it (the load transaction can run for minutes: rollups, index builds, attach).

Each test opens the finishing transaction first, then lets something happen on another
connection (a progress event, as the loader's control connection writes them) or reads the
server clock, and only then finishes the job: `finished_at` must not be earlier. With `now()`
(transaction start) it would be; no sleeps are needed, only the order of the statements.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.ingest import jobs
from service.settings import Settings
from tests.helpers import ingest, query

COUNTS = {
    "rows_read": 100,
    "rows_loaded": 100,
    "rows_rejected": 0,
    "bytes_read": 1,
    "bytes_total": 1,
}


def _claimed(url: str, path: Path) -> jobs.Job:
    with psycopg.connect(url, autocommit=True) as conn:
        row, created = jobs.enqueue(conn, path, path.name)
        assert created
        job = jobs.claim(conn, row["id"])
    assert job is not None
    return job


def _events(url: str, job_id: int) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = {}
    for r in query(
        url, "SELECT type, created_at FROM ingestion_events WHERE job_id = %s ORDER BY id", [job_id]
    ):
        out.setdefault(r["type"], []).append(r["created_at"])
    return out


def _job(url: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        job = jobs.get_job(conn, job_id)
    assert job is not None
    return job


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_finished_at_follows_the_progress_written_during_the_finishing_transaction(
    db_url: str, sample_csv: Path, outcome: str
) -> None:
    job = _claimed(db_url, sample_csv)
    with psycopg.connect(db_url) as load, psycopg.connect(db_url, autocommit=True) as ctl:
        load.execute("SELECT 1")  # the finishing transaction is open from here
        jobs.progress(ctl, job, COUNTS)  # committed meanwhile, as the loader's ctl does
        if outcome == "succeeded":
            jobs.finish_succeeded(load, job, COUNTS)
        else:
            assert jobs.finish_failed(load, job, "boom") == "failed"
        load.commit()
    row, events = _job(db_url, job.id), _events(db_url, job.id)
    assert row["state"] == outcome
    assert row["started_at"] < row["finished_at"]
    assert row["finished_at"] >= max(events["progress"]), (row, events)
    # the terminal event is written last and stamped when written (migration 012)
    assert events[outcome][-1] >= row["finished_at"]


def test_a_job_given_up_as_stale_is_stamped_when_given_up(db_url: str, sample_csv: Path) -> None:
    job = _claimed(db_url, sample_csv)
    with psycopg.connect(db_url) as conn:
        mark = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        # stale after 0 s, one attempt allowed: the claimed job fails for good
        assert jobs.recover_stale(conn, 0.0, max_attempts=1) == [job.id]
        conn.commit()
    row = _job(db_url, job.id)
    assert row["state"] == "failed"
    assert row["finished_at"] >= mark > row["started_at"]


def test_a_real_ingestion_finishes_after_its_last_event(
    db_url: str, settings: Settings, sample_csv: Path
) -> None:
    """Through the loader: started_at <= every event of the run <= finished_at, all within
    the server-clock interval measured around the whole ingestion."""
    before = query(db_url, "SELECT clock_timestamp() AS t")[0]["t"]
    job = ingest(db_url, settings, sample_csv)
    after = query(db_url, "SELECT clock_timestamp() AS t")[0]["t"]
    assert job["state"] == "succeeded", job["error"]
    events = _events(db_url, job["id"])
    run = events["progress"] + events["succeeded"]
    assert before <= job["started_at"] <= min(run)
    assert max(events["progress"]) <= job["finished_at"] <= events["succeeded"][-1] <= after
    assert job["finished_at"] - job["started_at"] <= after - before
