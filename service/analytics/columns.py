"""Columnar copies of the large jobs' raw points, on the API host's disk: the edge reads of the
weekly averages at numpy's speed instead of an index-only scan's (docs/columnar-copy.md).

A large job's trips live in a table of their own (`trips_job_N`, attached to `trips` by the job's
commit) that nothing changes afterwards. For such a table, a copy holds each end's points sorted
by (fine row, x), the order of the end's covering B-tree (db/migrations/020), as flat files of
one column each: x, y, the other end's x and y, the day (days since 1970-01-01) and the region,
plus the first point of each fine row. A strip of an area's edge is then, per fine row, one
binary search for each bound of its x range and a contiguous run of points, tested with numpy
(about 1-2 ns a point, against ~1-1.5 us a row for the index-only scan at 100M trips).

Exactness rests on three things:
- a copy is used for a read only when every job table the read's snapshot sees has one
  (weekly._consistent reads the attached tables with the snapshot); the rest of the raw points,
  `trips_p0` (the small jobs' rows, which change), are read from PostgreSQL in that snapshot;
- a copy is made of the table's rows in their stored doubles (binary COPY) and tested with the
  same comparisons as the SQL it stands in for; a polygon's ST_Covers with PostGIS's own
  point-in-polygon, operation for operation (service/analytics/pip.py), or, for a polygon that
  test cannot take, in PostgreSQL;
- a copy is filed under the database's random identity (db/migrations/024), the table's name
  and oid, the last applied migration and FORMAT: another database, a table made anew or a
  migration (one may rewrite `trips`, as 014 and 020 did) never finds an old copy.

A copy is built after the job is queryable (`trips columns build`, or the API process after each
job that succeeds: see build_missing), in a temporary directory renamed into place when
complete; until then, reads go to PostgreSQL alone, as they did before copies existed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from service.analytics import finegrid
from service.analytics.pip import Covers

log = logging.getLogger("trips.columns")

FORMAT = 1
EPOCH = date(1970, 1, 1)  # day 0 of the copies (a Thursday)
COLUMNS = ("x", "y", "ox", "oy", "day", "region")  # ox, oy: the other end
DTYPES = {"x": "<f8", "y": "<f8", "ox": "<f8", "oy": "<f8", "day": "<i4", "region": "<i4"}

# One row of the binary COPY below: a field count, then each field's length and value
# (fr int4, x, y, other x, other y float8, day int4, region int4), big-endian. Every field has a
# fixed width and none is NULL, so rows are records of one numpy dtype.
_FIELDS = [("fr", ">i4"), ("x", ">f8"), ("y", ">f8"), ("ox", ">f8"), ("oy", ">f8")]
_FIELDS += [("day", ">i4"), ("region", ">i4")]
_ROW = np.dtype(
    [("n", ">i2")]
    + [item for k, (name, t) in enumerate(_FIELDS) for item in ((f"l{k}", ">i4"), (name, t))]
)
_HEADER = b"PGCOPY\n\xff\r\n\x00"
_EXPORT = sql.SQL("""
    COPY (SELECT {fr}, {x}, {y}, {ox}, {oy}, started_at::date - date '1970-01-01', region_id
          FROM {table} ORDER BY {fr}, {x}) TO STDOUT (FORMAT binary)""")
_ENDS = {"o": ("ofr", "ox", "oy", "dx", "dy"), "d": ("dfr", "dx", "dy", "ox", "oy")}


@dataclass(frozen=True)
class Identity:
    """What a read's snapshot says of the store: the database's identity, its last migration,
    the tables attached to `trips` (oid, name), and which of them is trips_p0."""

    store: str
    migration: int
    tables: tuple[tuple[int, str], ...]

    @property
    def jobs(self) -> list[tuple[int, str]]:
        return [(oid, name) for oid, name in self.tables if name != "trips_p0"]

    def name(self, oid: int, table: str) -> str:
        return f"{table}-{oid}-m{self.migration}-v{FORMAT}"


# The tables attached to `trips` as the read's snapshot sees them (weekly._ATTACHED's list), with
# their names, the database's identity and its last migration: one row.
IDENTITY = """
    SELECT array_agg(i.inhrelid::bigint ORDER BY i.inhrelid),
           array_agg(c.relname::text ORDER BY i.inhrelid),
           (SELECT id::text FROM store_identity),
           (SELECT max(version) FROM schema_migrations)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'trips'::regclass"""


def identity(row: Any) -> Identity | None:
    if row is None or row[0] is None or row[2] is None:
        return None
    return Identity(row[2], int(row[3]), tuple(zip(map(int, row[0]), row[1], strict=True)))


@dataclass
class End:
    """One end's points of one table, sorted by (fine row, x): column arrays (memory-mapped) and
    starts[r - row0], the first point of fine row r (starts[-1]: the number of points)."""

    row0: int
    starts: np.ndarray
    cols: dict[str, np.ndarray]

    @classmethod
    def open(cls, path: Path, meta: dict[str, Any]) -> End:
        n = meta["rows"]
        # plain arrays over the maps: a slice of an np.memmap pays for its subclass (~5 us)
        cols = {
            c: (
                np.asarray(np.memmap(path / f"{c}.bin", dtype=DTYPES[c], mode="r", shape=(n,)))
                if n
                else np.zeros(0, DTYPES[c])
            )
            for c in COLUMNS
        }
        starts = np.fromfile(path / "starts.bin", dtype="<i8")
        return cls(meta["row0"], starts, cols)

    def runs(
        self, rows: np.ndarray, x0: np.ndarray, x1: np.ndarray, closed: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each (row, x0, x1): the run [lo, hi) of its points with x0 <= x <= x1 (closed) or
        x0 <= x < x1; and the index of the query each run answers."""
        r = rows - self.row0
        ok = (r >= 0) & (r < len(self.starts) - 1)
        which = np.flatnonzero(ok)
        r = r[ok]
        a, b = self.starts[r], self.starts[r + 1]
        x = self.cols["x"]
        lo = _search(x, a, b, x0[ok], right=False)
        hi = _search(x, lo, b, x1[ok], right=closed)
        keep = hi > lo
        return lo[keep], hi[keep], which[keep]


def _search(x: np.ndarray, a: np.ndarray, b: np.ndarray, v: np.ndarray, right: bool) -> np.ndarray:
    """Binary searches, all at once: for each i, the first k in [a[i], b[i]) with x[k] > v[i]
    (right) or x[k] >= v[i] (else), or b[i]; x sorted within each [a[i], b[i])."""
    lo, hi = a.astype(np.int64), b.astype(np.int64)
    if not len(x):
        return lo
    last = len(x) - 1
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        xm = x[np.minimum(mid, last)]
        up = active & ((xm <= v) if right else (xm < v))
        lo = np.where(up, mid + 1, lo)
        hi = np.where(active & ~up, mid, hi)


def gather(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indexes of the runs [lo, hi), concatenated, and for each the run it came from."""
    n = hi - lo
    total = int(n.sum())
    if not total:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    run = np.repeat(np.arange(len(n)), n)
    return np.arange(total) + np.repeat(lo - (np.cumsum(n) - n), n), run


def _by_slices(lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether runs are long enough to copy run by run rather than gather by index."""
    return len(lo) * 64 <= int((hi - lo).sum())


def take(
    col: np.ndarray, lo: np.ndarray, hi: np.ndarray, idx: np.ndarray | None = None
) -> np.ndarray:
    """col's runs [lo, hi), concatenated: by their indexes `idx` (gather(lo, hi)[0]) when
    given, else copied run by run (long runs: a flat strip's few fine rows)."""
    if idx is not None:
        return col[idx]
    if not len(lo):
        return np.zeros(0, col.dtype)
    return np.concatenate([col[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])


@dataclass
class Copy:
    """A job table's copy: its two ends."""

    ends: dict[str, End]


def days(w0: date, w1: date) -> tuple[int, int]:
    """The window of weeks [w0, w1] (Mondays) as days of the copies, both included."""
    return (w0 - EPOCH).days, (w1 - EPOCH).days + 6


def weeks(day: np.ndarray, weight: np.ndarray | None = None) -> Counter[date]:
    """Trips (or the sum of `weight`) per week (Monday) of the days."""
    out: Counter[date] = Counter()
    if not len(day):
        return out
    first = int(day.min())
    sums = np.bincount(day - first, weights=weight)  # per day, then folded into weeks here
    for k in np.flatnonzero(sums).tolist():
        d = first + k
        out[EPOCH + timedelta(days=d - (d + 3) % 7)] += int(round(sums[k]))
    return Counter({w: n for w, n in out.items() if n})


class Store:
    """The copies under `root`, filed by database identity; opened copies kept (memory maps)."""

    def __init__(self, root: Path):
        self.root = root
        self._open: dict[Path, Copy] = {}
        self._lock = threading.Lock()
        self.changed = threading.Condition()  # notified after each copy is built

    def wait(self, predicate: Any, timeout: float) -> bool:
        """Wait until predicate() holds, tested now and after each build (tests, tools)."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def path(self, ident: Identity, oid: int, table: str) -> Path:
        return self.root / ident.store / ident.name(oid, table)

    def copies(self, ident: Identity | None) -> list[Copy] | None:
        """The copies of every job table of the snapshot, or None when one has none."""
        if ident is None:
            return None
        out = []
        for oid, table in ident.jobs:
            path = self.path(ident, oid, table)
            copy = self._open.get(path)
            if copy is None:
                meta_file = path / "meta.json"
                if not meta_file.exists():
                    return None
                meta = json.loads(meta_file.read_text())
                ends = {e: End.open(path / e, meta["ends"][e]) for e in "od"}
                copy = Copy(ends)
                with self._lock:
                    self._open[path] = copy
            out.append(copy)
        return out

    def missing(self, ident: Identity) -> list[tuple[int, str]]:
        jobs = ident.jobs
        return [(o, t) for o, t in jobs if not (self.path(ident, o, t) / "meta.json").exists()]

    def build(self, url: str, oid: int, table: str, ident: Identity) -> dict[str, Any]:
        """Copy one job table (both ends) into a temporary directory, renamed into place."""
        final = self.path(ident, oid, table)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t = time.monotonic()
        meta: dict[str, Any] = {"table": table, "oid": oid, "format": FORMAT, "ends": {}}
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for end in "od":
                    meta["ends"][end] = _export(conn, table, end, tmp / end)
            counts = {e["rows"] for e in meta["ends"].values()}
            if len(counts) != 1:
                raise RuntimeError(f"{table}: the two ends' exports differ in rows: {counts}")
            meta["rows"] = counts.pop()
            meta["seconds"] = round(time.monotonic() - t, 2)
            (tmp / "meta.json").write_text(json.dumps(meta))
            try:
                tmp.rename(final)
            except OSError:  # built meanwhile by another process: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            with self.changed:
                self.changed.notify_all()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return meta

    def prune(self, ident: Identity) -> list[str]:
        """Remove this database's copies of tables no longer attached, or of an older migration
        or format (and temporary directories of builds that died)."""
        here = self.root / ident.store
        if not here.is_dir():
            return []
        keep = {ident.name(oid, t) for oid, t in ident.jobs}
        gone = []
        for p in here.iterdir():
            if p.name in keep or (p.name.startswith(".tmp-") and _alive(p.name)):
                continue
            shutil.rmtree(p, ignore_errors=True)
            with self._lock:
                self._open.pop(p, None)
            gone.append(p.name)
        return gone


def _alive(tmp_name: str) -> bool:
    """Whether the process that makes a temporary directory .tmp-<name>-<pid>-<thread> lives."""
    try:
        os.kill(int(tmp_name.split("-")[-2]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _export(conn: psycopg.Connection, table: str, end: str, path: Path) -> dict[str, Any]:
    """One end of a table into column files under `path`, in the order of the end's index
    (read by an index-only scan: a job's pages are all-visible, COPY FREEZE), streamed: memory
    stays that of one block of rows."""
    path.mkdir()
    fr, x, y, ox, oy = (sql.Identifier(c) for c in _ENDS[end])
    query = _EXPORT.format(fr=fr, x=x, y=y, ox=ox, oy=oy, table=sql.Identifier(table))
    files = {c: (path / f"{c}.bin").open("wb") for c in (*COLUMNS, "fr")}
    rows, rest, header = 0, b"", False
    pending: list[bytes] = []
    size = 0
    try:
        with conn.transaction():
            conn.execute("SET LOCAL enable_sort = off")
            with conn.cursor().copy(query) as copy:
                # the server sends a message per row: rows are parsed a few MiB at a time
                for block in copy:
                    pending.append(bytes(block))
                    size += len(block)
                    if size < _BATCH_BYTES:
                        continue
                    rest, header, n = _consume(rest + b"".join(pending), header, files)
                    rows += n
                    pending, size = [], 0
        rest, header, n = _consume(rest + b"".join(pending), header, files)
        rows += n
        if rest != b"\xff\xff":
            raise RuntimeError(f"binary COPY of {table}: {len(rest)} bytes left at its end")
    finally:
        for f in files.values():
            f.close()
    row0, starts = 0, np.zeros(1, np.int64)
    if rows:
        frs = np.memmap(path / "fr.bin", dtype="<i4", mode="r", shape=(rows,))
        row0, row1 = int(frs[0]), int(frs[-1])
        starts = np.searchsorted(frs, np.arange(row0, row1 + 2), side="left").astype(np.int64)
        del frs
    (path / "fr.bin").unlink()
    starts.astype("<i8").tofile(path / "starts.bin")
    return {"rows": rows, "row0": row0}


_BATCH_BYTES = 4 << 20


def _consume(data: bytes, header: bool, files: dict[str, Any]) -> tuple[bytes, bool, int]:
    """Write the whole rows at the start of `data` (after the stream's header, when not yet
    read); returns what is left, whether the header is read, and the rows written."""
    if not header:
        if len(data) < 19:
            return data, False, 0
        if data[:11] != _HEADER:
            raise RuntimeError("not a binary COPY stream")
        data = data[19 + int.from_bytes(data[15:19], "big") :]
        header = True
    n = len(data) // _ROW.itemsize
    if not n:
        return data, header, 0
    _write(np.frombuffer(data, _ROW, count=n), files)
    return data[n * _ROW.itemsize :], header, n


def _write(rec: np.ndarray, files: dict[str, Any]) -> int:
    if not (rec["n"] == len(_FIELDS)).all():
        raise RuntimeError("binary COPY: a row with an unexpected number of fields")
    for k, (_, t) in enumerate(_FIELDS):
        if not (rec[f"l{k}"] == np.dtype(t).itemsize).all():
            raise RuntimeError("binary COPY: a NULL or a field of unexpected width")
    for c in ("fr", *COLUMNS):
        files[c].write(rec[c].astype(DTYPES.get(c, "<i4")).tobytes())
    return len(rec)


def fine_rows(y0: float, y1: float) -> np.ndarray:
    return np.arange(finegrid.fine(y0), finegrid.fine(y1) + 1, dtype=np.int64)


# The process's store: set by configure() (the API's lifespan, the CLI, the benchmarks); None:
# no copies, every read from PostgreSQL alone.
STORE: Store | None = None


def configure(root: Path | None) -> Store | None:
    global STORE
    STORE = Store(root) if root is not None else None
    return STORE


def read_identity(conn: psycopg.Connection) -> Identity | None:
    return identity(conn.execute(IDENTITY).fetchone())


def build_missing(url: str, store: Store, prune: bool = True) -> list[dict[str, Any]]:
    """Build the copies that the store's attached job tables lack, one after another, and
    (prune) remove the copies of this database that no longer serve."""
    with psycopg.connect(url, autocommit=True) as conn:
        ident = read_identity(conn)
    if ident is None:
        return []
    if prune:
        store.prune(ident)
    built = []
    for oid, table in store.missing(ident):
        meta = store.build(url, oid, table, ident)
        log.info("columnar copy of %s: %s rows in %s s", table, meta["rows"], meta["seconds"])
        built.append(meta)
    return built


# The reads that the copies answer, each the twin of a SQL part of service/analytics/weekly.py
# restricted to the job tables (its other twin reads trips_p0): the same points, the same tests.


@dataclass
class Filter:
    """The window (days d0..d1, both in) and the regions (None: all) of a read."""

    d0: int
    d1: int
    regions: np.ndarray | None

    @classmethod
    def of(cls, params: dict[str, Any]) -> Filter:
        d0, d1 = days(params["w0"], params["w1"])
        regions = params.get("regions")
        return cls(d0, d1, None if regions is None else np.asarray(regions, dtype=np.int64))

    def test(self, day: np.ndarray, region: np.ndarray) -> np.ndarray:
        ok = (day >= self.d0) & (day <= self.d1)
        if self.regions is not None:
            ok &= np.isin(region, self.regions)
        return ok


Strip = tuple[float, float, float, float]  # x0, y0, x1, y1 (weekly.box_plan's strips)


def _in(x: np.ndarray, y: np.ndarray, s: Strip) -> np.ndarray:
    return (x >= s[0]) & (x <= s[2]) & (y >= s[1]) & (y <= s[3])


def _strip_points(end: End, strips: list[Strip], cols: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`cols` of the points of the strips, each point once: a point of strip k that lies in
    a strip before it is left out (weekly._strip_scans). Every strip's fine rows are searched
    at once; "k" holds each point's strip."""
    rows, x0, x1, which = [], [], [], []
    for j, (a, b, c, d) in enumerate(strips):
        r = fine_rows(b, d)
        rows.append(r)
        x0.append(np.full(len(r), a))
        x1.append(np.full(len(r), c))
        which.append(np.full(len(r), j))
    lo, hi, q = end.runs(np.concatenate(rows), np.concatenate(x0), np.concatenate(x1), True)
    idx = None if _by_slices(lo, hi) else gather(lo, hi)[0]
    got = {c: take(end.cols[c], lo, hi, idx) for c in ("x", "y", *cols)}
    k = np.repeat(np.concatenate(which)[q], hi - lo)
    y0 = np.array([st[1] for st in strips])[k]
    y1 = np.array([st[3] for st in strips])[k]
    keep = (got["y"] >= y0) & (got["y"] <= y1)
    for j in range(len(strips) - 1):
        keep &= ~((k > j) & _in(got["x"], got["y"], strips[j]))
    return {c: v[keep] for c, v in got.items()}


def box_edge(
    copies: list[Copy], end: str, strips: list[Strip], box: Strip, r: dict[str, float], f: Filter
) -> Counter[date]:
    """weekly._BOX_EDGE on the copies: over the points of the strips, +1 for a point of the box
    outside the rollup's rectangle R ([tx0, tx1) x [ty0, ty1)), -1 for a point of R outside it.
    `box`: (minx, miny, maxx, maxy)."""
    day_parts, weight_parts = [], []
    for copy in copies:
        p = _strip_points(copy.ends[end], strips, ("day", "region"))
        x, y = p["x"], p["y"]
        inb = _in(x, y, box)
        inr = (x >= r["tx0"]) & (x < r["tx1"]) & (y >= r["ty0"]) & (y < r["ty1"])
        sel = f.test(p["day"], p["region"]) & (inb != inr)
        day_parts.append(p["day"][sel])
        weight_parts.append(np.where(inb[sel], 1.0, -1.0))
    return weeks(_cat(day_parts, np.int32), _cat(weight_parts, np.float64))


def pair_edge(
    copies: list[Copy],
    strips: list[Strip],
    box: Strip,
    r: dict[str, float],
    either: bool,
    f: Filter,
) -> Counter[date]:
    """weekly._PAIR_EDGE's two scans on the copies: the trips with their origin in the strips,
    and those with their destination there and their origin in none, each counted by
    f = [origin in box op destination in box] - [origin block in R op destination block in R]."""
    day_parts, weight_parts = [], []
    for copy in copies:
        for end in "od":
            e = copy.ends[end]
            p = _strip_points(e, strips, ("ox", "oy", "day", "region"))
            keep = f.test(p["day"], p["region"])
            if end == "d":  # the origin (the other end here) in no strip
                for s in strips:
                    keep &= ~_in(p["ox"], p["oy"], s)
            x, y, ox, oy = p["x"], p["y"], p["ox"], p["oy"]
            a, b = _in(x, y, box), _in(ox, oy, box)
            ra = (x >= r["tx0"]) & (x < r["tx1"]) & (y >= r["ty0"]) & (y < r["ty1"])
            rb = (ox >= r["tx0"]) & (ox < r["tx1"]) & (oy >= r["ty0"]) & (oy < r["ty1"])
            value = ((a | b) if either else (a & b)).astype(np.int64)
            value -= ((ra | rb) if either else (ra & rb)).astype(np.int64)
            sel = keep & (value != 0)
            day_parts.append(p["day"][sel])
            weight_parts.append(value[sel].astype(np.float64))
    return weeks(_cat(day_parts, np.int32), _cat(weight_parts, np.float64))


def both_box(copies: list[Copy], box: Strip, dest_inside: bool, f: Filter) -> Counter[date]:
    """weekly._BOTH_BOX on the copies: the trips whose origin is in the box and whose
    destination is (dest_inside) or is not."""
    day_parts = []
    for copy in copies:
        p = _strip_points(copy.ends["o"], [box], ("ox", "oy", "day", "region"))
        keep = f.test(p["day"], p["region"]) & (_in(p["ox"], p["oy"], box) == dest_inside)
        day_parts.append(p["day"][keep])
    return weeks(_cat(day_parts, np.int32))


@dataclass
class Fine:
    """A polygon's cells of `step` degrees (weekly._KEY_STEP) and fine rows (weekly.FineCells,
    weekly._BOTH_FINE): the class of each cell (0 outside, 1 covered, 2 cut) as
    classes[kx - kx0, ky - ky0], the polygon's bounds widened by EPS (minx, miny, maxx, maxy),
    and per fine row its x range [x0, x1] and its inside span [ia, ib)."""

    step: float
    kx0: int
    ky0: int
    classes: np.ndarray
    bounds: tuple[float, float, float, float]
    rows: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    ia: np.ndarray
    ib: np.ndarray

    def covered(self, x: np.ndarray, y: np.ndarray, covers: Covers) -> np.ndarray:
        """weekly._CLASS's test of a point: in the bounds and its cell covered, or cut and the
        point covered (ST_Covers: `covers`)."""
        minx, miny, maxx, maxy = self.bounds
        out = np.zeros(len(x), dtype=bool)
        at = np.flatnonzero((x >= minx) & (x <= maxx) & (y >= miny) & (y <= maxy))
        kx = np.floor(x[at] / self.step).astype(np.int64) - self.kx0
        ky = np.floor(y[at] / self.step).astype(np.int64) - self.ky0
        cls = self.classes[kx, ky]
        out[at] = cls == 1
        cut = at[cls == 2]
        out[cut] = covers(x[cut], y[cut])
        return out


def both_shape(
    copies: list[Copy], fine: Fine, covers: Covers, dest_inside: bool, f: Filter
) -> Counter[date]:
    """weekly._BOTH_FINE on the copies: the trips whose origin the polygon covers (read along
    the fine rows it meets; an origin in its row's inside span is covered with no test) and
    whose destination it covers (dest_inside) or does not."""
    day_parts = []
    for copy in copies:
        e = copy.ends["o"]
        lo, hi, which = e.runs(fine.rows, fine.x0, fine.x1, closed=True)
        idx, run = gather(lo, hi)
        q = which[run]
        x, day, region = e.cols["x"][idx], e.cols["day"][idx], e.cols["region"][idx]
        keep = f.test(day, region)
        idx, q, x, day = idx[keep], q[keep], x[keep], day[keep]
        # covered: in the row's inside span, or by the class of its cell (and the test)
        origin = (x >= fine.ia[q]) & (x < fine.ib[q])
        rest = np.flatnonzero(~origin)
        origin[rest] = fine.covered(x[rest], e.cols["y"][idx[rest]], covers)
        idx, day = idx[origin], day[origin]
        dest = fine.covered(e.cols["ox"][idx], e.cols["oy"][idx], covers)
        day_parts.append(day[dest == dest_inside])
    return weeks(_cat(day_parts, np.int32))


@dataclass
class Probes:
    """weekly.shape_plan's probes: fine row, [x0, x1) and [y0, y1) (weekly.probe_bounds) and
    kind: 1 / -1 count each point +1 / -1, 2 counts the points the polygon covers, -2 takes off
    those it does not (ST_Covers: pip.Covers)."""

    fr: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    kind: np.ndarray


def probe_points(
    copies: list[Copy], end: str, probes: Probes, f: Filter, covers: Covers | None = None
) -> Counter[date]:
    """weekly._SHAPE_QUERY's probes on the copies: each point of a probe of kind 1 / -1 counted
    +1 / -1; of kind 2, +1 when `covers` (the polygon's ST_Covers, pip.Covers) holds; of kind -2,
    -1 when it does not. Probes of kinds 2 / -2 need `covers`."""
    tested = np.abs(probes.kind) == 2
    if covers is None and tested.any():
        raise ValueError("probes of kinds 2 and -2 need the polygon's test")
    day_parts, weight_parts = [], []
    for copy in copies:
        e = copy.ends[end]
        lo, hi, which = e.runs(probes.fr, probes.x0, probes.x1, closed=False)
        idx, run = gather(lo, hi)
        q = which[run]  # the probe of each point
        y, day, region = e.cols["y"][idx], e.cols["day"][idx], e.cols["region"][idx]
        keep = (y >= probes.y0[q]) & (y < probes.y1[q]) & f.test(day, region)
        kind = probes.kind[q][keep]
        weight = kind.astype(np.float64)
        cut = np.flatnonzero(np.abs(kind) == 2)
        if len(cut) and covers is not None:
            at = idx[keep][cut]
            inside = covers(e.cols["x"][at], e.cols["y"][at])
            weight[cut] = np.where(kind[cut] > 0, inside, inside.astype(np.float64) - 1)
        day_parts.append(day[keep])
        weight_parts.append(weight)
    return weeks(_cat(day_parts, np.int32), _cat(weight_parts, np.float64))


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
