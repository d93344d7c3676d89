"""A large job's indexes, built after its load while its transaction merges the summaries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

INDEX_MEMORY = "512MB"  # per index build; a job builds its indexes one at a time
# No parallel workers for a job's index builds: the two chains (rollups, indexes) already share
# the two cores.
INDEX_WORKERS = 0
# The partitioned indexes of `trips` (db/migrations/001_baseline.sql), built per large job after
# its load: suffix -> the index's method and columns, as on the parent (ATTACH adopts them).
# Longest build first: the job's connection takes the last ones when its rollups are merged.
_JOB_INDEXES = {
    "origin": "gist (origin)",
    "destination": "gist (destination)",
    "id": "btree (id)",
    "started_at": "brin (started_at)",
}


class IndexBuild(threading.Thread):
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


def _cell_key_sql(name: str, table: sql.Identifier, end: str, cell: float) -> sql.Composed:
    """The job's B-tree on one end's summary cell key (`cell` degrees), the time, then the
    partition, region and point inside: the expression trips_weekly_end reads the cut cells'
    raw points by (db/migrations/001_baseline.sql), for index-only scans of frozen pages."""
    key = sql.SQL(
        "floor(ST_X({e}) / {c}::float8)::bigint * 4294967296"
        " + floor(ST_Y({e}) / {c}::float8)::bigint"
    ).format(e=sql.Identifier(end), c=sql.Literal(repr(float(cell))))
    return sql.SQL(
        "CREATE INDEX {} ON {} USING btree (({}), started_at) INCLUDE (part, region_id, {})"
        " WITH (fillfactor = 100)"
    ).format(sql.Identifier(f"{name}_{end[0]}cell"), table, key, sql.Identifier(end))


def job_index_statements(name: str, table: sql.Identifier, cell: float) -> dict[str, sql.Composed]:
    """CREATE INDEX of each of the parent's indexes on the job's table and of the job's own
    B-trees on its ends' summary cells, longest build first."""
    out = {suffix: _index_sql(name, table, suffix, d) for suffix, d in _JOB_INDEXES.items()}
    keys = {
        f"{end[0]}cell": _cell_key_sql(name, table, end, cell) for end in ("destination", "origin")
    }
    gists = {k: out[k] for k, d in _JOB_INDEXES.items() if d.startswith("gist")}
    return gists | keys | {k: v for k, v in out.items() if k not in gists}
