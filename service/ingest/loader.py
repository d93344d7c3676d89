"""Loading one claimed job: read → binary COPY into the job's own table → index → attach.

1. ``CREATE TABLE trips_job_<id>`` and ``COPY … (FORMAT BINARY, FREEZE)`` of the validated rows
   (with wal_level=minimal the new table's data skips WAL entirely), then COMMIT. The table is
   not a partition of ``trips`` yet, so no query sees it; it only exists to be indexed.
   Parsing runs on a reader thread, a bounded queue ahead of the COPY (pyarrow and numpy
   release the GIL); this thread groups each batch for the rollups (service/ingest/rollups.py)
   while psycopg's writer thread sends it, so client work and server-side COPY overlap.
2. The indexes are built one after the other on an extra connection while the load connection
   opens the job's transaction, copies the job's rollup totals into staging tables and merges
   them into the rollups (``apply_staged_rollups``, db/migrations/013, 017, 018): the two
   chains share the machine's two cores. A large job's cell and cluster totals are copied into
   new partitions of the rollups, which keep the keys new to the store and are attached; they
   meet the stored keys in index probes or in one hash join over the stored rollup, whichever
   the store's shape makes cheaper (018).
3. In that one transaction: the rejected rows (spooled to a temporary file, not memory), the
   CHECK and ``ATTACH PARTITION`` (a small job's rows are moved into ``trips_p0`` instead), the
   job row set to ``succeeded`` with its event, then COMMIT: the trips appear together.

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

from service.ingest import jobs, rollups
from service.ingest.encode import COLUMNS, HEADER, TRAILER, encode_rows
from service.ingest.reader import Batch, FileFormatError, TripReader
from service.settings import Settings

log = logging.getLogger("trips.ingest")
ProgressFn = Callable[[dict[str, Any]], None]
PROGRESS_EVERY_S = 0.5
WRITE_QUEUE = 8  # COPY chunks (512 KiB each) queued for the writer thread
INDEX_MEMORY = "512MB"  # per index build; a job builds its indexes one at a time
# No parallel workers for a job's index builds: the two chains (rollups, indexes) already share
# the two cores, and workers only add sorts to merge. A/B on one 2M file, alternating A B B A A
# B B A in fresh databases: `trips ingest` median 18.3 s with the server's 2 workers, 17.4 s
# without (each run without faster than the runs with it beside it).
INDEX_WORKERS = 0
# The partitioned indexes of `trips` (db/migrations 001, 014, 020, 022), built per large job after
# its load: suffix -> the index's method and columns, exactly as on the parent (ATTACH adopts them).
# Longest build first: the job's connection takes the last ones when its rollups are merged.
_JOB_INDEXES = {
    "origin_rows": "btree (ofr, ox) INCLUDE (oy, started_at, region_id, dx, dy, id, datasource_id)",
    "destination_rows": (
        "btree (dfr, dx) INCLUDE (dy, started_at, region_id, ox, oy, id, datasource_id)"
    ),
    "id": "btree (id)",
    "started_at": "brin (started_at)",
}


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
        partials = rollups.JobRollups(_rollup_params(ctl), job.bytes)
        backend_pid = load.info.backend_pid
        # The rollups' staging tables are temporary: room for them in local buffers.
        load.execute("SET temp_buffers = '512MB'")
        jobs.heartbeat(ctl, job, backend_pid)
        beat = Heartbeat(url, job, settings.heartbeat_seconds, backend_pid)
        beat.start()
        try:
            _drop_orphans(ctl, job.id)
            # The CHECK, declared on the empty table, lets ATTACH skip its scan (0.3 s a 2M-row
            # job when it was added after the load and validated by a scan of its own).
            load.execute(
                sql.SQL("CREATE TABLE {} (LIKE trips, CONSTRAINT {} CHECK (part = {}))").format(
                    table, sql.Identifier(f"trips_job_{job.id}_part"), sql.Literal(job.id)
                )
            )
            with TripReader(path) as reader:
                if reader.header.ignored:
                    ctl.execute(
                        "UPDATE ingestion_jobs SET ignored_columns = %s WHERE id = %s",
                        [reader.header.ignored, job.id],
                    )
                _copy(
                    load,
                    ctl,
                    table,
                    job,
                    reader,
                    counts,
                    spool,
                    partials,
                    beat,
                    started,
                    on_progress,
                )
            load.commit()  # the unattached table only: invisible to queries
            _report(ctl, job, counts, started, on_progress)
            timings = {"read_copy_s": time.monotonic() - started}
            _finalize(
                url, load, table, job, counts["rows_loaded"], settings, partials, timings, beat
            )
            _store_rejections(load, job.id, spool)
            jobs.finish_succeeded(load, job, counts)
            t = time.monotonic()
            load.commit()
            timings["commit_s"] = time.monotonic() - t
            log.info("job %s timings %s", job.id, {k: round(v, 2) for k, v in timings.items()})
        finally:
            beat.stop.set()
            partials.close()
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
    table: sql.Identifier,
    job: jobs.Job,
    reader: TripReader,
    counts: dict[str, Any],
    spool: IO[bytes],
    partials: rollups.JobRollups,
    beat: Heartbeat,
    started: float,
    on_progress: ProgressFn | None,
) -> None:
    """COPY the file's valid rows; a reader thread parses and encodes a few blocks ahead, and
    this thread groups them for the rollups while psycopg's writer sends them."""
    regions, sources = Lookup(ctl, "regions"), Lookup(ctl, "datasources")
    blocks: queue.Queue[Any] = queue.Queue(maxsize=3)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in reader:
                item = (
                    *_encode(ctl, job, batch, regions, sources),
                    batch,
                    batch.rows_read,
                    batch.rows_valid,
                    batch.rejections,
                    reader.bytes_read,
                )
                while not stop.is_set():
                    try:
                        blocks.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            blocks.put(_DONE)
        except BaseException as e:  # handed to the COPY side, which re-raises it
            blocks.put(e)

    producer = threading.Thread(target=produce, name=f"reader-{job.id}", daemon=True)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY, FREEZE)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )
    last_report = 0.0
    try:
        with _copy_to(load, copy_sql) as copy:
            copy.write(HEADER)
            producer.start()
            while (item := blocks.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                body, region, source, b, rows_read, rows_valid, rejections, bytes_read = item
                if body:
                    copy.write(body)
                    partials.add(region, source, b.ts_us, b.ox, b.oy, b.dx, b.dy)
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


def _encode(
    ctl: psycopg.Connection,
    job: jobs.Job,
    batch: Batch,
    regions: Lookup,
    sources: Lookup,
) -> tuple[bytes, np.ndarray | None, np.ndarray | None]:
    """The batch's binary COPY rows, with its region and datasource ids."""
    n = batch.rows_valid
    if not n:
        return b"", None, None
    first_id = _reserve_ids(ctl, n)
    region, source = regions.ids_for(batch.region), sources.ids_for(batch.datasource)
    b = batch
    body = encode_rows(first_id, job.id, job.id, region, source, b.ts_us, b.ox, b.oy, b.dx, b.dy)
    return body, region, source


def _rollup_params(ctl: psycopg.Connection) -> rollups.Params:
    row = ctl.execute(
        "SELECT g.cell, p.cell, p.bucket_minutes FROM rollup_grid g, trip_cluster_params p"
    ).fetchone()
    assert row is not None
    return rollups.Params(float(row[0]), float(row[1]), int(row[2]))


# The staging tables of apply_staged_rollups (db/migrations/013, 017, 018), in the spool's
# column order.
# A large job copies its cell and cluster totals into new partitions of the rollups instead of
# temporary tables (`_rollup_stage`).
_STAGING = {
    "weekly": (
        "stage_weekly",
        "region_id int, week date, datasource_id int, trips bigint, last_at timestamp",
    ),
    "cells": ("stage_cells", "weekly_cell_trips"),
    "clusters": ("stage_clusters", "trip_cluster_parts"),
}
_ROLLUP_COLUMNS = {
    "cells": "side, cx, cy, week, region_id, trips",
    "clusters": "region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy",
}


def _rollup_stage(load: psycopg.Connection, key: str, part: int) -> str:
    """Create the table that receives one rollup's totals of the job; returns its name.

    Partition 0 (a small job): a temporary table like the rollup. A large job: the rollup's
    partition for this job, created in the job's transaction (so its rows skip WAL under
    wal_level=minimal); apply_staged_rollups builds its primary key and attaches it, after
    dropping from the cells' the keys already stored elsewhere (deleted, or the table rewritten
    with the new keys only when many were found; db/migrations/017, 019). The clusters'
    partition keeps all the job's keys (025)."""
    table, like = _STAGING[key]
    if key not in _ROLLUP_COLUMNS:
        load.execute(f"CREATE TEMP TABLE {table} ({like}) ON COMMIT DROP")
        return table
    if not part:
        load.execute(f"CREATE TEMP TABLE {table} (LIKE {like} INCLUDING DEFAULTS) ON COMMIT DROP")
        return table
    name = f"{like}_job_{part}"
    # room for HOT updates of the cells by later jobs (016); a job's cluster totals are never
    # updated (025)
    fill = 70 if key == "cells" else 100
    load.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK (part = {}))"
            " WITH (fillfactor = {})"
        ).format(sql.Identifier(name), sql.Identifier(like), sql.Literal(part), sql.Literal(fill))
    )
    load.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN part SET DEFAULT {}").format(
            sql.Identifier(name), sql.Literal(part)
        )
    )
    return name


def _apply_rollups(
    load: psycopg.Connection,
    name: str,
    partials: rollups.JobRollups,
    timings: dict[str, float],
    part: int = 0,
) -> None:
    """Copy the job's rollup totals into staging tables and merge them (job transaction)."""
    stages = {}
    for key in _STAGING:
        t = time.monotonic()
        stage = stages[key] = _rollup_stage(load, key, part)
        columns = sql.SQL(f" ({_ROLLUP_COLUMNS[key]})" if key in _ROLLUP_COLUMNS else "")
        statement = sql.SQL("COPY {}{} FROM STDIN (FORMAT BINARY)")
        with _copy_to(load, statement.format(sql.Identifier(stage), columns)) as copy:
            for block in partials.copy_stream(key):
                copy.write(block)
        if not (part and key in _ROLLUP_COLUMNS):  # a new partition is analysed once attached
            load.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(stage)))
        timings[f"stage_{key}_s"] = time.monotonic() - t
    t = time.monotonic()
    p = partials.params
    row = load.execute(
        "SELECT apply_staged_rollups(%s, %s, %s, %s, %s::regclass, %s::regclass)",
        [p.grid, p.cluster_cell, p.bucket_minutes, part, stages["cells"], stages["clusters"]],
    ).fetchone()
    if not (row and row[0]):  # the grids changed since the job began: the server-side path
        log.info("job table %s: rollup grids changed during the load, aggregating in SQL", name)
        for stage in stages.values():
            load.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(stage)))
        load.execute("SELECT trip_rollups_lock()")
        load.execute("SELECT apply_trip_rollups(%s::regclass)", [name])
    elif not part:
        for stage in stages.values():
            load.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(stage)))
    else:  # the rollups' new partitions are attached: only the temporary tables go
        load.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(stages["weekly"])))
    timings["rollups_s"] = time.monotonic() - t


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


class _IndexBuild(threading.Thread):
    """CREATE INDEX statements taken one after the other, in order, from a shared list by a
    connection of its own (the table is committed, not yet attached); the job's connection
    takes the ones left once its rollups are merged (`take`)."""

    def __init__(self, url: str, statements: dict[str, sql.Composed]):
        super().__init__(daemon=True, name="index-build")
        self.url = url
        self.todo = list(statements.items())
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.seconds: dict[str, float] = {}
        self.conn: psycopg.Connection | None = None

    def take(self) -> tuple[str, sql.Composed] | None:
        with self.lock:
            return self.todo.pop(0) if self.todo and self.error is None else None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                self.conn = conn
                self.build_here(conn, self.seconds)
        except BaseException as e:
            self.error = e

    def build_here(
        self,
        conn: psycopg.Connection,
        seconds: dict[str, float],
        key: str = "{}",
        local: bool = False,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Build the statements not yet taken on `conn`, with the index build settings
        (transaction-local with `local`), recording each one's seconds under `key`."""
        scope = "LOCAL " if local else ""
        conn.execute(f"SET {scope}maintenance_work_mem = '{INDEX_MEMORY}'")
        conn.execute(f"SET {scope}max_parallel_maintenance_workers = {INDEX_WORKERS}")
        while not stop() and (item := self.take()):
            t = time.monotonic()
            conn.execute(item[1])
            seconds[key.format(item[0])] = time.monotonic() - t

    def cancel(self) -> None:
        if self.conn is not None and self.is_alive():
            try:
                self.conn.cancel_safe()
            except psycopg.Error:
                pass


def _index_sql(name: str, table: sql.Identifier, suffix: str, definition: str) -> sql.Composed:
    # A job's partition is never written again: full pages (the attach ignores the setting).
    full = " WITH (fillfactor = 100)" if definition.startswith("btree") else ""
    return sql.SQL("CREATE INDEX {} ON {} USING {}{}").format(
        sql.Identifier(f"{name}_{suffix}"), table, sql.SQL(definition), sql.SQL(full)
    )


def _finalize(
    url: str,
    load: psycopg.Connection,
    table: sql.Identifier,
    job: jobs.Job,
    rows: int,
    settings: Settings,
    partials: rollups.JobRollups,
    timings: dict[str, float],
    beat: Heartbeat,
) -> None:
    name = f"trips_job_{job.id}"
    if rows < settings.small_job_rows:
        _apply_rollups(load, name, partials, timings)
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
    # other, longest first, while this transaction merges the rollups (at 2M rows, more
    # concurrent builds only slowed both); then this connection builds the ones left, beside
    # it. All are named like the parent's indexes so that the attach adopts them, and the CHECK
    # lets ATTACH skip its scan.
    statements = {
        suffix: _index_sql(name, table, suffix, definition)
        for suffix, definition in _JOB_INDEXES.items()
    }
    build = _IndexBuild(url, statements)
    build.start()
    try:
        part = job.id if rows >= settings.rollup_partition_rows else 0
        _apply_rollups(load, name, partials, timings, part)
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


__all__ = ["load_job", "FileFormatError"]
