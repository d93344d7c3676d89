"""`trips ingest FILE…` without a server: queue each file and load it in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from service.ingest import jobs
from service.ingest.worker import run_one
from service.settings import Settings


def ingest_local(
    url: str, settings: Settings, files: list[Path], force: bool, console: Console
) -> bool:
    ok = True
    for path in files:
        path = path.resolve()
        with psycopg.connect(url, autocommit=True) as conn:
            job, created = jobs.enqueue(conn, path, path.name, force)
            if not created:
                console.print(
                    f"{path.name}: already ingested as job {job['id']} "
                    f"({job['state']}); use --force to ingest again"
                )
                ok = ok and job["state"] != "failed"
                continue
            claimed = jobs.claim(conn, job["id"])
        if claimed is None:  # a running worker took it first: its outcome is the same
            console.print(f"{path.name}: job {job['id']} taken by another worker")
            continue
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TransferSpeedColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(path.name, total=max(claimed.bytes, 1), rows=0)

            def on_progress(p: dict[str, Any], task: Any = task, bar: Any = bar) -> None:
                bar.update(task, completed=p["bytes_read"], rows=p["rows_read"])

            try:
                final = run_one(url, settings, claimed, on_progress)
            except jobs.JobLost as e:  # its row was deleted meanwhile: say so, go on
                ok = False
                console.print(f"[red]{path.name}: {e}[/]")
                continue
            bar.update(task, completed=max(claimed.bytes, 1), rows=final["rows_read"])
        secs = (
            (final["finished_at"] - final["started_at"]).total_seconds()
            if final["finished_at"] and final["started_at"]
            else 0.0
        )
        rate = final["rows_read"] / secs if secs else 0.0
        if final["state"] == "succeeded":
            console.print(
                f"[green]{path.name}: job {final['id']} succeeded[/] — "
                f"{final['rows_read']:,} rows read, {final['rows_loaded']:,} loaded, "
                f"{final['rows_rejected']:,} rejected in {secs:.2f} s ({rate:,.0f} rows/s)"
            )
        else:
            ok = False
            console.print(
                f"[red]{path.name}: job {final['id']} {final['state']}: {final['error']}[/]"
            )
    return ok
