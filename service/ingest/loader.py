"""Loading one claimed job: read → binary COPY into the job's own table → index → attach.

Everything that stores data happens in one transaction on the load connection:

1. ``CREATE TABLE trips_job_<id>`` and ``COPY … (FORMAT BINARY, FREEZE)`` of the validated rows
   (with wal_level=minimal the new table's data skips WAL entirely);
2. the rejected rows into ``ingestion_rejections``;
3. the rollups and clusters from the job's rows (``apply_trip_rollups``);
4. a large job's table gets its indexes built in bulk and is attached as a partition of
   ``trips``; a small job's rows are moved into the shared partition ``trips_p0``;
5. the job row set to ``succeeded`` with its event, then COMMIT: the trips appear together.

Progress and heartbeats go through a second, autocommit connection, so they are visible while
the load transaction is still open. A job that dies rolls back and stores nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import psycopg
from psycopg import sql

from service.ingest import jobs
from service.ingest.encode import COLUMNS, HEADER, TRAILER, encode_rows
from service.ingest.reader import Batch, FileFormatError, TripReader
from service.settings import Settings

log = logging.getLogger("trips.ingest")
ProgressFn = Callable[[dict[str, Any]], None]
PROGRESS_EVERY_S = 0.5
# The partitioned indexes of `trips` (db/migrations), built per large job after its load.
_JOB_INDEXES = (("id", "btree", "id"), ("origin", "gist", "origin"),
                ("destination", "gist", "destination"), ("started_at", "brin", "started_at"))


class Lookup:
    """Region or datasource name → id, created on first sight through the autocommit connection."""

    def __init__(self, conn: psycopg.Connection, table: str):
        self.conn = conn
        self.table = sql.Identifier(table)
        self.ids: dict[str, int] = {}

    def ids_for(self, names: pa.Array) -> np.ndarray:
        enc = pc.dictionary_encode(names)
        dictionary = enc.dictionary.to_pylist()
        missing = [n for n in dictionary if n not in self.ids]
        if missing:
            self.conn.execute(
                sql.SQL("INSERT INTO {} (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING")
                .format(self.table), [missing])
            for name, id_ in self.conn.execute(
                sql.SQL("SELECT name, id FROM {} WHERE name = ANY(%s)").format(self.table),
                [missing],
            ):
                self.ids[name] = id_
        mapping = np.array([self.ids[n] for n in dictionary], dtype=np.int32)
        return mapping[enc.indices.to_numpy(zero_copy_only=False)]


class Heartbeat(threading.Thread):
    """Keeps the job's heartbeat fresh while long steps (index builds) run."""

    def __init__(self, url: str, job: jobs.Job, every_s: float, backend_pid: int):
        super().__init__(daemon=True, name=f"heartbeat-{job.id}")
        self.url, self.job, self.every_s, self.pid = url, job, every_s, backend_pid
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    if not jobs.heartbeat(conn, self.job, self.pid):
                        self.lost = True
                        return
                    self.stop.wait(self.every_s)
        except psycopg.Error as e:  # the database went away: the load will notice too
            log.warning("heartbeat for job %s stopped: %s", self.job.id, e)


def _reserve_ids(conn: psycopg.Connection, n: int) -> int:
    row = conn.execute(
        "UPDATE trip_id_counter SET next_id = next_id + %s RETURNING next_id - %s", [n, n]
    ).fetchone()
    assert row is not None
    return int(row[0])


def load_job(url: str, settings: Settings, job: jobs.Job,
             on_progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run one claimed job to success (returns its counts) or raise."""
    path = Path(job.path)
    counts: dict[str, Any] = {"rows_read": 0, "rows_loaded": 0, "rows_rejected": 0,
                              "bytes_read": 0, "bytes_total": job.bytes}
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as ctl, psycopg.connect(url) as load:
        backend_pid = load.info.backend_pid
        jobs.heartbeat(ctl, job, backend_pid)
        beat = Heartbeat(url, job, settings.heartbeat_seconds, backend_pid)
        beat.start()
        try:
            regions, sources = Lookup(ctl, "regions"), Lookup(ctl, "datasources")
            table = sql.Identifier(f"trips_job_{job.id}")
            load.execute(sql.SQL("CREATE TABLE {} (LIKE trips)").format(table))
            last_report = 0.0
            rejections: list[tuple[int, str, str]] = []
            with TripReader(path) as reader:
                if reader.header.ignored:
                    ctl.execute("UPDATE ingestion_jobs SET ignored_columns = %s WHERE id = %s",
                                [reader.header.ignored, job.id])
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY, FREEZE)").format(
                    table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
                with load.cursor().copy(copy_sql) as copy:
                    copy.write(HEADER)
                    for batch in reader:
                        _write_batch(copy, ctl, job, batch, regions, sources)
                        counts["rows_read"] += batch.rows_read
                        counts["rows_loaded"] += batch.rows_valid
                        counts["rows_rejected"] += len(batch.rejections)
                        counts["bytes_read"] = reader.bytes_read
                        rejections.extend(batch.rejections)
                        if len(rejections) >= 10_000:
                            _store_rejections(load, job.id, rejections)
                            rejections.clear()
                        now = time.monotonic()
                        if now - last_report >= PROGRESS_EVERY_S:
                            last_report = now
                            _report(ctl, job, counts, started, on_progress)
                        if beat.lost:
                            raise jobs.JobLost(f"job {job.id} was taken away from this worker")
                    copy.write(TRAILER)
                counts["bytes_read"] = reader.bytes_read
            _store_rejections(load, job.id, rejections)
            _report(ctl, job, counts, started, on_progress)
            timings = {"read_copy_s": time.monotonic() - started}
            _finalize(load, table, job, counts["rows_loaded"], settings, timings)
            jobs.finish_succeeded(load, job, counts)
            t = time.monotonic()
            load.commit()
            timings["commit_s"] = time.monotonic() - t
            log.info("job %s timings %s", job.id, {k: round(v, 2) for k, v in timings.items()})
        finally:
            beat.stop.set()
    counts["seconds"] = time.monotonic() - started
    return counts


def _write_batch(copy: psycopg.Copy, ctl: psycopg.Connection, job: jobs.Job, batch: Batch,
                 regions: Lookup, sources: Lookup) -> None:
    n = batch.rows_valid
    if not n:
        return
    first_id = _reserve_ids(ctl, n)
    copy.write(encode_rows(first_id, job.id, job.id, regions.ids_for(batch.region),
                           sources.ids_for(batch.datasource), batch.ts_us,
                           batch.ox, batch.oy, batch.dx, batch.dy))


def _store_rejections(load: psycopg.Connection, job_id: int,
                      rejections: list[tuple[int, str, str]]) -> None:
    if not rejections:
        return
    with load.cursor().copy(
        "COPY ingestion_rejections (job_id, line, reason, raw) FROM STDIN"
    ) as copy:
        for line, reason, raw in rejections:
            copy.write_row((job_id, line, reason, raw))


def _report(ctl: psycopg.Connection, job: jobs.Job, counts: dict[str, Any], started: float,
            on_progress: ProgressFn | None) -> None:
    elapsed = max(time.monotonic() - started, 1e-6)
    total = max(counts["bytes_total"], 1)
    fraction = min(counts["bytes_read"] / total, 1.0)
    rate = counts["rows_read"] / elapsed
    eta = (elapsed / fraction - elapsed) if fraction > 0 else None
    payload = {**counts, "percent": round(100 * fraction, 1), "rows_per_s": round(rate, 1),
               "eta_s": round(eta, 1) if eta is not None else None}
    jobs.progress(ctl, job, payload)
    if on_progress:
        on_progress(payload)


def _finalize(load: psycopg.Connection, table: sql.Identifier, job: jobs.Job, rows: int,
              settings: Settings, timings: dict[str, float]) -> None:
    t = time.monotonic()
    load.execute("SELECT apply_trip_rollups(%s::regclass)", [f"trips_job_{job.id}"])
    timings["rollups_s"] = time.monotonic() - t
    if rows < settings.small_job_rows:
        load.execute(sql.SQL(
            "INSERT INTO trips_p0 SELECT id, 0, ingestion_id, region_id, datasource_id, "
            "started_at, origin, destination FROM {}").format(table))
        load.execute(sql.SQL("DROP TABLE {}").format(table))
        return
    # Indexes built in bulk (sorted GiST builds) after the load, named like the parent's so the
    # attach adopts them; the CHECK lets ATTACH skip its validation scan.
    name = f"trips_job_{job.id}"
    load.execute("SET LOCAL maintenance_work_mem = '512MB'")
    for suffix, method, column in _JOB_INDEXES:
        t = time.monotonic()
        load.execute(sql.SQL("CREATE INDEX {} ON {} USING {} ({})").format(
            sql.Identifier(f"{name}_{suffix}"), table, sql.SQL(method), sql.Identifier(column)))
        timings[f"index_{suffix}_s"] = time.monotonic() - t
    t = time.monotonic()
    load.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (part = {})").format(
        table, sql.Identifier(f"{name}_part"), sql.Literal(job.id)))
    load.execute(sql.SQL("ALTER TABLE trips ATTACH PARTITION {} FOR VALUES IN ({})").format(
        table, sql.Literal(job.id)))
    load.execute(sql.SQL("ANALYZE {}").format(table))
    timings["attach_analyze_s"] = time.monotonic() - t


__all__ = ["load_job", "FileFormatError"]
