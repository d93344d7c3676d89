"""`trips ingest FILE… --server URL`: upload to a running API, draw progress from its event stream.

The upload is a streamed multipart body (httpx reads the file in chunks). Progress comes from
`GET /ingestions/{id}/events`, never from polling; a dropped stream is resumed with
`Last-Event-ID`, so no event is lost across a reconnect.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from service.events.client import SseParser

RECONNECTS = 20


def ingest_remote(server: str, files: list[Path], force: bool, console: Console) -> bool:
    """Upload each file and follow its job; False when any job fails (or cannot be followed)."""
    token = os.environ.get("TRIPS_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(30.0, read=120.0)  # heartbeats arrive far more often than this
    ok = True
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout) as client:
        for path in files:
            try:
                ok = _ingest_one(client, path, force, console) and ok
            except httpx.HTTPError as e:
                console.print(f"[red]{path.name}: {server} did not answer: {e}[/]")
                ok = False
    return ok


class _Reading:
    """A file whose reads advance a progress bar (httpx still sees its size through fileno)."""

    def __init__(self, f: BinaryIO, bar: Progress, task: TaskID):
        self.f, self.bar, self.task = f, bar, task

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n)
        self.bar.advance(self.task, len(chunk))
        return chunk

    def fileno(self) -> int:
        return self.f.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]:>12,} rows"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _ingest_one(client: httpx.Client, path: Path, force: bool, console: Console) -> bool:
    size = path.stat().st_size
    with _bar(console) as bar, open(path, "rb") as f:
        upload = bar.add_task(f"{path.name} upload", total=max(size, 1), rows=0)
        body: Any = _Reading(f, bar, upload)  # file-like: httpx streams it in chunks
        r = client.post(
            "/ingestions",
            params={"force": "true"} if force else None,
            files={"file": (path.name, body, "text/csv")},
        )
        bar.update(upload, completed=max(size, 1))
        if r.status_code >= 400:
            console.print(f"[red]{path.name}: upload refused ({r.status_code}): {_detail(r)}[/]")
            return False
        job = r.json()
        if r.status_code == 200:
            console.print(
                f"{path.name}: already ingested as job {job['id']} ({job['state']}); "
                "use --force to ingest again"
            )
            return job["state"] != "failed"
        task = bar.add_task(f"{path.name} job {job['id']}", total=max(job["bytes"], 1), rows=0)
        final = _follow(client, job["id"], bar, task)
        if final is not None and final.type == "succeeded":
            bar.update(task, completed=max(job["bytes"], 1))
    return _summary(client, path, job["id"], final, console)


def _follow(client: httpx.Client, job_id: int, bar: Progress, task: TaskID) -> Any:
    """Follow the job's stream to its last event, resuming after drops; the last event or None."""
    parser = SseParser()
    for attempt in range(RECONNECTS):
        headers = {"Last-Event-ID": str(parser.last_id)} if parser.last_id else {}
        try:
            with client.stream("GET", f"/ingestions/{job_id}/events", headers=headers) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    if event.type == "progress":
                        p = event.json()
                        bar.update(task, completed=p["bytes_read"], rows=p["rows_read"])
                    elif event.type in ("succeeded", "failed"):
                        return event
        except (httpx.TransportError, httpx.HTTPStatusError):
            pass
        time.sleep(min(0.2 * 2**attempt, 5.0))  # the server went away: back off, then resume
    return None


def _summary(client: httpx.Client, path: Path, job_id: int, final: Any, console: Console) -> bool:
    if final is None:
        console.print(f"[red]{path.name}: lost the event stream of job {job_id}[/]")
        return False
    if final.type == "failed":
        console.print(f"[red]{path.name}: job {job_id} failed: {final.json().get('error')}[/]")
        return False
    job = client.get(f"/ingestions/{job_id}").json()
    secs = 0.0
    if job.get("started_at") and job.get("finished_at"):
        secs = (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()
    rate = job["rows_read"] / secs if secs else 0.0
    console.print(
        f"[green]{path.name}: job {job_id} succeeded[/] — {job['rows_read']:,} rows "
        f"read, {job['rows_loaded']:,} loaded, {job['rows_rejected']:,} rejected in "
        f"{secs:.2f} s ({rate:,.0f} rows/s)"
    )
    return True


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail"))
    except ValueError:
        return r.text[:200]
