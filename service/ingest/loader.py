"""Loading one claimed job: read → binary COPY into the job's own table → index → attach.

1. ``CREATE TABLE trips_job_<id>`` and ``COPY … (FORMAT BINARY, FREEZE)`` of the validated rows
   (with wal_level=minimal the new table's data skips WAL entirely; on Citus the table is
   distributed first and the COPY has no FREEZE: citus_load.py), then COMMIT. The table is
   not a partition of ``trips`` yet, so no query sees it. Parsing runs on a reader thread, a
   bounded queue ahead of the COPY; the rows go out in chunks of SORT_ROWS sorted by the summary
   grid's block and cell of their origin, so that the points of one cell sit on a few pages (the
   raw reads of trips_weekly visit the heap through GiST bitmap scans).
2. The job's GiST and B-tree indexes are built on an extra connection while the load connection
   opens the job's transaction and adds the job's trips to the summary tables with
   ``trip_rollups`` (db/migrations/001_baseline.sql): the two chains share the machine's cores.
3. In that one transaction: the rejected rows (spooled to a temporary file, not memory), the
   CHECK and ``ATTACH PARTITION`` (a small job's rows are moved into ``trips_p0`` instead), the
   job row set to ``succeeded`` with its event, ``trip_clusters`` replaced by the copy a large
   job's rollups wrote (``trip_clusters_swap``), then COMMIT: the trips appear together.

A job that dies leaves at most an unattached ``trips_job_<id>`` that no query reads; the next
attempt of the job drops it first, and every load drops those of failed jobs.
Progress and heartbeats go through a second, autocommit connection.
"""

from __future__ import annotations

import logging
import pickle
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import psycopg
import psycopg.copy
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from service.ingest import citus_load, jobs
from service.ingest.encode import COLUMNS, HEADER, TRAILER, encode_rows
from service.ingest.indexes import IndexBuild, job_index_statements
from service.ingest.reader import FileFormatError, TripReader
from service.settings import Settings

log = logging.getLogger("trips.ingest")
ProgressFn = Callable[[dict[str, Any]], None]
PROGRESS_EVERY_S = 0.5
WRITE_QUEUE = 8  # COPY chunks (512 KiB each) queued for the writer thread
# Rows sorted together by the origin's summary block and cell before the COPY: the rows of one
# cell land on a few pages of the job's table. A chunk's arrays and its COPY body (about 140 B a
# row) are alive in two or three copies at once: 10M-row file, peak RSS 256 / 257 / 314 MiB with
# 250k rows, 219 / 231 / 219 with 125k (three runs each, same time).
SORT_ROWS = 125_000


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
                sql.SQL(
                    "INSERT INTO {} (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
                ).format(self.table),
                [missing],
            )
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


def load_job(
    url: str, settings: Settings, job: jobs.Job, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Run one claimed job to success (returns its counts) or raise."""
    path = Path(job.path)
    counts: dict[str, Any] = {
        "rows_read": 0,
        "rows_loaded": 0,
        "rows_rejected": 0,
        "bytes_read": 0,
        "bytes_total": job.bytes,
    }
    started = time.monotonic()
    table = sql.Identifier(f"trips_job_{job.id}")
    with (
        psycopg.connect(url, autocommit=True) as ctl,
        psycopg.connect(url) as load,
        tempfile.TemporaryFile() as spool,
    ):
        backend_pid = load.info.backend_pid
        # trip_rollups' staging table of the job's cells is temporary: room in local buffers.
        load.execute("SET temp_buffers = '256MB'")
        jobs.heartbeat(ctl, job, backend_pid)
        beat = Heartbeat(url, job, settings.heartbeat_seconds, backend_pid)
        beat.start()
        try:
            _drop_orphans(ctl, job.id)
            citus = citus_load.is_citus(ctl)
            # The CHECK, declared on the empty table, lets ATTACH skip its scan (0.3 s a 2M-row
            # job when it was added after the load and validated by a scan of its own).
            load.execute(
                sql.SQL("CREATE TABLE {} (LIKE trips, CONSTRAINT {} CHECK (part = {}))").format(
                    table, sql.Identifier(f"trips_job_{job.id}_part"), sql.Literal(job.id)
                )
            )
            if citus:  # distributed before its COPY (service/ingest/citus_load.py)
                citus_load.distribute_job_table(load, f"trips_job_{job.id}")
                load.commit()
            with TripReader(path) as reader:
                if reader.header.ignored:
                    ctl.execute(
                        "UPDATE ingestion_jobs SET ignored_columns = %s WHERE id = %s",
                        [reader.header.ignored, job.id],
                    )
                _copy(
                    load,
                    ctl,
                    (table, citus_load.copy_options(citus)),
                    job,
                    reader,
                    counts,
                    spool,
                    beat,
                    started,
                    on_progress,
                )
            load.commit()  # the unattached table only: invisible to queries
            _report(ctl, job, counts, started, on_progress)
            timings = {"read_copy_s": time.monotonic() - started}
            _finalize(url, load, table, job, counts["rows_loaded"], settings, timings, beat)
            _store_rejections(load, job.id, spool)
            jobs.finish_succeeded(load, job, counts)
            t = time.monotonic()
            # Last: a large job's clusters were written anew beside trip_clusters (trip_rollups);
            # the table is replaced here, its readers waiting from this lock to the commit.
            load.execute("SELECT trip_clusters_swap()")
            load.commit()
            timings["commit_s"] = time.monotonic() - t
            log.info("job %s timings %s", job.id, {k: round(v, 2) for k, v in timings.items()})
        finally:
            beat.stop.set()
    counts["seconds"] = time.monotonic() - started
    return counts


_DONE = object()


class _BoundedWriter(psycopg.copy.QueuedLibpqWriter):
    """psycopg's queued COPY writer (a thread sends the data) with a short queue: at most
    WRITE_QUEUE chunks of 512 KiB wait, so a client faster than the server blocks instead of
    buffering the whole file (psycopg's queue holds 1024 chunks)."""

    def __init__(self, cursor: psycopg.Cursor[Any]):
        super().__init__(cursor)
        self._queue = queue.Queue(maxsize=WRITE_QUEUE)  # type: ignore[assignment]


def _copy_to(conn: psycopg.Connection, statement: Any) -> Any:
    """A COPY whose writes return at once while the queue has room: this thread goes on
    computing while the server ingests."""
    cur = conn.cursor()
    return cur.copy(statement, writer=_BoundedWriter(cur))


def _copy(
    load: psycopg.Connection,
    ctl: psycopg.Connection,
    target: tuple[sql.Identifier, sql.Composable],
    job: jobs.Job,
    reader: TripReader,
    counts: dict[str, Any],
    spool: IO[bytes],
    beat: Heartbeat,
    started: float,
    on_progress: ProgressFn | None,
) -> None:
    """COPY the file's valid rows; a reader thread parses, sorts and encodes them a few chunks
    ahead while psycopg's writer sends them."""
    regions, sources = Lookup(ctl, "regions"), Lookup(ctl, "datasources")
    blocks: queue.Queue[Any] = queue.Queue(maxsize=3)
    stop = threading.Event()
    grid = _grid(ctl)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                blocks.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            chunk = _Chunk(grid)
            for batch in reader:
                chunk.add(batch, regions, sources)
                full = chunk.rows >= SORT_ROWS
                body = chunk.encode(ctl, job) if full else b""
                counts_item = (batch.rows_read, batch.rows_valid, batch.rejections)
                if not put((body, *counts_item, reader.bytes_read)):
                    return
                if full:
                    chunk = _Chunk(grid)
            put((chunk.encode(ctl, job), 0, 0, [], reader.bytes_read))
            blocks.put(_DONE)
        except BaseException as e:  # handed to the COPY side, which re-raises it
            blocks.put(e)

    producer = threading.Thread(target=produce, name=f"reader-{job.id}", daemon=True)
    table, options = target  # options: FREEZE except on Citus
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN {}").format(
        table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), options
    )
    last_report = 0.0
    try:
        with _copy_to(load, copy_sql) as copy:
            copy.write(HEADER)
            producer.start()
            while (item := blocks.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                body, rows_read, rows_valid, rejections, bytes_read = item
                if body:
                    copy.write(body)
                counts["rows_read"] += rows_read
                counts["rows_loaded"] += rows_valid
                counts["rows_rejected"] += len(rejections)
                counts["bytes_read"] = bytes_read
                if rejections:
                    pickle.dump(rejections, spool)
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    _report(ctl, job, counts, started, on_progress)
                if beat.lost:
                    raise jobs.JobLost(f"job {job.id} was taken away from this worker")
            copy.write(TRAILER)
    finally:
        stop.set()
        if producer.is_alive():
            producer.join()
    counts["bytes_read"] = reader.bytes_read


def _grid(ctl: psycopg.Connection) -> tuple[float, int]:
    row = ctl.execute("SELECT cell, block FROM trip_grid").fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


class _Chunk:
    """Valid rows of consecutive batches, sent as one COPY body sorted by the origin's summary
    block, then cell (floor(x / cell), as trip_rollups computes it)."""

    def __init__(self, grid: tuple[float, int]):
        self.cell, self.block = grid
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.rows = 0

    def add(self, batch: Any, regions: Lookup, sources: Lookup) -> None:
        if batch.rows_valid:
            region, source = regions.ids_for(batch.region), sources.ids_for(batch.datasource)
            b = batch
            self.parts.append((region, source, b.ts_us, b.ox, b.oy, b.dx, b.dy))
            self.rows += batch.rows_valid

    def encode(self, ctl: psycopg.Connection, job: jobs.Job) -> bytes:
        if not self.rows:
            return b""
        region, source, ts, ox, oy, dx, dy = (
            np.concatenate(c) for c in zip(*self.parts, strict=True)
        )
        self.parts = []
        cx = np.floor(ox / self.cell).astype(np.int64)
        cy = np.floor(oy / self.cell).astype(np.int64)
        order = np.lexsort((cx, cy, cx // self.block, cy // self.block))
        first_id = _reserve_ids(ctl, len(order))
        cols = [a[order] for a in (region, source, ts, ox, oy, dx, dy)]
        return encode_rows(first_id, job.id, job.id, *cols)


def _drop_orphans(ctl: psycopg.Connection, job_id: int) -> None:
    """Drop job tables left unattached by an earlier attempt of this job or by failed jobs."""
    rows = ctl.execute(
        """SELECT c.relname FROM pg_class c
           LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
           LEFT JOIN ingestion_jobs j ON c.relname = 'trips_job_' || j.id
           WHERE c.relkind = 'r' AND c.relname ~ '^trips_job_[0-9]+$' AND i.inhrelid IS NULL
             AND c.relnamespace = 'public'::regnamespace
             AND (j.id = %s OR j.state = 'failed' OR j.id IS NULL)""",
        [job_id],
    ).fetchall()
    for (name,) in rows:
        ctl.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _store_rejections(load: psycopg.Connection, job_id: int, spool: IO[bytes]) -> None:
    if not spool.tell():
        return
    spool.seek(0)
    with load.cursor().copy(
        "COPY ingestion_rejections (job_id, line, reason, raw) FROM STDIN"
    ) as copy:
        while True:
            try:
                chunk = pickle.load(spool)
            except EOFError:
                break
            for line, reason, raw in chunk:
                copy.write_row((job_id, line, reason, raw))


def _report(
    ctl: psycopg.Connection,
    job: jobs.Job,
    counts: dict[str, Any],
    started: float,
    on_progress: ProgressFn | None,
) -> None:
    elapsed = max(time.monotonic() - started, 1e-6)
    total = max(counts["bytes_total"], 1)
    fraction = min(counts["bytes_read"] / total, 1.0)
    rate = counts["rows_read"] / elapsed
    eta = (elapsed / fraction - elapsed) if fraction > 0 else None
    payload = {
        **counts,
        "percent": round(100 * fraction, 1),
        "rows_per_s": round(rate, 1),
        "eta_s": round(eta, 1) if eta is not None else None,
    }
    jobs.progress(ctl, job, payload)
    if on_progress:
        on_progress(payload)


def _finalize(
    url: str,
    load: psycopg.Connection,
    table: sql.Identifier,
    job: jobs.Job,
    rows: int,
    settings: Settings,
    timings: dict[str, float],
    beat: Heartbeat,
) -> None:
    name = f"trips_job_{job.id}"
    if rows < settings.small_job_rows:
        _rollups(load, name, timings)
        load.execute(
            sql.SQL("INSERT INTO trips_p0 ({}) SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                sql.SQL(", ").join(
                    sql.SQL("0") if c == "part" else sql.Identifier(c) for c in COLUMNS
                ),
                table,
            )
        )
        load.execute(sql.SQL("DROP TABLE {}").format(table))
        return
    # Two chains share the two cores: one extra connection builds the indexes one after the
    # other, longest first, while this transaction merges the rollups; then this connection
    # builds the ones left, beside it. The CHECK lets ATTACH skip its scan.
    build = IndexBuild(url, job_index_statements(name, table, _grid(load)[0]))
    build.start()
    try:
        _rollups(load, name, timings)
        t = time.monotonic()
        build.build_here(load, timings, "index_{}_here_s", local=True, stop=lambda: beat.lost)
        while build.is_alive():
            build.join(0.5)
            if beat.lost:
                raise jobs.JobLost(f"job {job.id} was taken away from this worker")
        if build.error is not None:
            raise build.error
        timings |= {f"index_{k}_s": v for k, v in build.seconds.items()}
        timings["index_wait_s"] = time.monotonic() - t
    finally:
        build.cancel()
        build.join()
    t = time.monotonic()
    load.execute(
        sql.SQL("ALTER TABLE trips ATTACH PARTITION {} FOR VALUES IN ({})").format(
            table, sql.Literal(job.id)
        )
    )
    load.execute(sql.SQL("ANALYZE {}").format(table))
    timings["attach_analyze_s"] = time.monotonic() - t


def _rollups(load: psycopg.Connection, name: str, timings: dict[str, float]) -> None:
    """Add the job's trips to the summary tables, in the job's transaction."""
    t = time.monotonic()
    load.execute("SELECT trip_rollups(%s::regclass, false)", [name])
    timings["rollups_s"] = time.monotonic() - t


__all__ = ["load_job", "FileFormatError"]
