"""The inbox: files dropped into TRIPS_DATA_DIR are queued once each (dedup by sha256).

Change notifications come from the OS (watchfiles); a file is queued only once its size and
mtime held still across hashing, so a file still being copied in is picked up when it is done.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import psycopg
from watchfiles import Change, awatch

from service.ingest import jobs
from service.settings import Settings

log = logging.getLogger("trips.inbox")
SUFFIXES = (".csv", ".csv.gz")


def is_trip_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUFFIXES) and not path.name.startswith(".")


def enqueue_file(url: str, path: Path) -> int | None:
    before = path.stat()
    digest = jobs.sha256_of(path)
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None  # still being written: a later change event brings it back
    with psycopg.connect(url, autocommit=True) as conn:
        job, created = jobs.enqueue(conn, path.resolve(), path.name, digest=digest)
    if created:
        log.info("inbox: queued %s as job %s", path.name, job["id"])
    return int(job["id"])


def enqueue_dir(url: str, directory: Path) -> list[int]:
    ids: list[int] = []
    if not directory.is_dir():
        return ids
    for path in sorted(directory.iterdir()):
        if is_trip_file(path):
            job_id = enqueue_file(url, path)
            if job_id is not None:
                ids.append(job_id)
    return ids


async def watch_inbox(url: str, settings: Settings) -> None:
    directory = settings.data_dir
    directory.mkdir(parents=True, exist_ok=True)
    await anyio.to_thread.run_sync(enqueue_dir, url, directory)
    # rust_timeout bounds how long a cancelled watch (server shutdown) waits for its thread.
    async for changes in awatch(directory, recursive=False, rust_timeout=1000):
        for change, name in changes:
            path = Path(name)
            if change != Change.deleted and is_trip_file(path):
                try:
                    await anyio.to_thread.run_sync(enqueue_file, url, path)
                except (OSError, psycopg.Error) as e:
                    log.warning("inbox: could not queue %s: %s", path.name, e)
