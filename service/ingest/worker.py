"""The ingestion worker: claims queued jobs and loads them; sleeps on NOTIFY, never busy-loops.

Any number of workers, in any process or machine, share one database: claims use
SELECT … FOR UPDATE SKIP LOCKED and every worker also recovers jobs whose worker went silent.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from service.events.store import JOBS_CHANNEL
from service.ingest import jobs
from service.ingest.loader import ProgressFn, load_job
from service.ingest.reader import FileFormatError
from service.settings import Settings

log = logging.getLogger("trips.worker")


def run_one(
    url: str, settings: Settings, job: jobs.Job, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Load a claimed job and record its outcome. Returns the job row as it ended."""
    try:
        load_job(url, settings, job, on_progress)
    except jobs.JobLost as e:
        log.warning("%s", e)
    except FileFormatError as e:
        _fail(url, settings, job, str(e), retriable=False)
    except FileNotFoundError as e:
        _fail(url, settings, job, f"file not found: {e.filename}", retriable=False)
    except psycopg.OperationalError as e:
        _fail(url, settings, job, f"database connection lost: {e}".strip(), retriable=True)
    except psycopg.errors.DeadlockDetected as e:
        _fail(url, settings, job, f"deadlock, retried: {e}", retriable=True)
    except Exception as e:  # the job fails with the reason; the worker lives on
        log.exception("job %s failed", job.id)
        _fail(url, settings, job, f"{type(e).__name__}: {e}", retriable=False)
    with psycopg.connect(url, autocommit=True) as conn:
        row = jobs.get_job(conn, job.id)
    if row is None:  # its row was deleted while it loaded
        raise jobs.JobLost(f"job {job.id} was deleted while it loaded")
    return row


def _fail(url: str, settings: Settings, job: jobs.Job, error: str, retriable: bool) -> None:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            state = jobs.finish_failed(conn, job, error, retriable, settings.max_attempts)
        log.info("job %s %s: %s", job.id, state, error)
    except psycopg.OperationalError:
        # The database is unreachable: stale-job recovery will requeue the job later.
        log.warning("could not record failure of job %s: database unreachable", job.id)


class Worker:
    """A claim loop; `stop()` ends it after the current job."""

    def __init__(self, url: str, settings: Settings):
        self.url = url
        self.settings = settings
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {JOBS_CHANNEL}")
                    backoff = 0.5
                    while not self._stop.is_set():
                        jobs.recover_stale(
                            conn, self.settings.stale_after_seconds, self.settings.max_attempts
                        )
                        job = jobs.claim(conn)
                        if job is not None:
                            log.info("job %s claimed (%s)", job.id, job.source)
                            try:
                                run_one(self.url, self.settings, job)
                            except jobs.JobLost as e:  # the next jobs still get a worker
                                log.warning("%s", e)
                            continue
                        # Sleep until a job is queued (NOTIFY) or it is time to look for stale jobs.
                        for _ in conn.notifies(
                            timeout=min(self.settings.stale_after_seconds, 5.0), stop_after=1
                        ):
                            pass
            except psycopg.OperationalError as e:
                log.warning("worker lost the database (%s); retrying in %.1f s", e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


def start_background(url: str, settings: Settings) -> tuple[Worker, threading.Thread]:
    worker = Worker(url, settings)
    thread = threading.Thread(target=worker.run, name="trips-worker", daemon=True)
    thread.start()
    return worker, thread
