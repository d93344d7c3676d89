"""A job's rollup aggregates, computed by the client with numpy in bounded memory.

The rollups (weekly_trips, weekly_cell_trips, trip_clusters) used to be aggregated by the server
from the job's stored trips: eight ST_X/ST_Y calls and a six-column sort per trip made that the
longest step of a job. Now the reader thread feeds each batch's keys here while the server runs
the COPY; the loader copies the job's totals (one row per key) into temporary tables of the
job's transaction, where `apply_staged_rollups` (db/migrations/013) merges them into the rollups.

Memory stays flat: rows are buffered up to a bound, reduced (sorted by key, summed), and spilled
to temporary files split by ranges of the key; at the end each split is read back and reduced on
its own, so the largest thing held is one split, whatever the file size.

The keys are the SQL definitions of db/migrations, in exact integer arithmetic where SQL uses
floats (a bucket is floor(seconds since midnight / (bucket_minutes * 60))); floor(x / cell) is the
same IEEE division and floor on both sides.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from service.ingest.encode import HEADER, TRAILER, binary_rows

US_PER_DAY = 86_400_000_000
# PostgreSQL's day 0, 2000-01-01, is a Saturday: weekday (Monday = 0) of day d is (d + 5) % 7.
_DAY0_WEEKDAY = 5
BUFFER_ROWS = 65_536  # rows held before a reduction (4 MiB for the widest table)
SPLIT_BYTES = 8 << 20  # bytes of the file per split of a job's spilled rows (~5 MiB of rows)
ENCODE_ROWS = 65_536  # rows per binary COPY chunk of the totals
# Blocks of BLOCK x BLOCK rollup cells: weekly_cell_trips also holds each block's trips per week,
# region and end, under the sides 'O' and 'D' (db/migrations/021), so that a big box's inner
# rectangle is read as whole blocks plus a fringe of cells (service/analytics/weekly.py).
BLOCK = 5
_BLOCK_SIDE = np.uint8(ord("o") - ord("O"))  # 'o' - 32 = 'O', 'd' - 32 = 'D'
# Pairs (origin block, destination block) of PAIR_GRID degrees, under side 'P' (db/migrations/
# 022): each end's block (bx, by) as one integer, pair_code(bx, by) = bx * PAIR_ROWS + by +
# PAIR_HALF, as trip_pair_key() in SQL; |by| <= 1800 < PAIR_HALF, so bx = code >> PAIR_SHIFT and
# by = (code & (PAIR_ROWS - 1)) - PAIR_HALF.
PAIR_GRID = 0.05
PAIR_SHIFT = 12
PAIR_ROWS = 1 << PAIR_SHIFT
PAIR_HALF = PAIR_ROWS // 2


@dataclass(frozen=True)
class Params:
    """The grids the stored rollups were built with (rollup_grid, trip_cluster_params)."""

    grid: float
    cluster_cell: float
    bucket_minutes: int


def week_days(ts_us: np.ndarray) -> np.ndarray:
    """Monday of date_trunc('week', ts) as days since 2000-01-01 (the binary `date`)."""
    days = ts_us // US_PER_DAY
    return (days - (days + _DAY0_WEEKDAY) % 7).astype(np.int32)


def buckets(ts_us: np.ndarray, minutes: int) -> np.ndarray:
    """Time-of-day bucket: whole `minutes`-long spans since local midnight."""
    return ((ts_us % US_PER_DAY) // (minutes * 60_000_000)).astype(np.int32)


def cells(v: np.ndarray, cell: float) -> np.ndarray:
    """floor(v / cell), as SQL's floor(v / cell)::int."""
    return np.floor(v / cell).astype(np.int32)


def pair_code(bx: Any, by: Any) -> Any:
    """The integer of pair block (bx, by): ints, or int32 arrays (which stay int32)."""
    return bx * PAIR_ROWS + by + PAIR_HALF


def pair_keys(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """trip_pair_key(x, y): the pair block of points, as one integer (the same IEEE division and
    floor as SQL's)."""
    return pair_code(cells(x, PAIR_GRID), cells(y, PAIR_GRID))


def _sort_keys(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): `order` sorts the rows by the keys (first key first); `starts` are the
    positions in that order where a new key begins.

    One argsort of the keys packed into an int64 when their ranges fit in 63 bits (they do
    for every realistic grid), else a lexsort."""
    layout, bits = [], 0
    for k in reversed(keys):
        lo = int(k.min())
        layout.append((k, lo, bits))
        bits += max(int(k.max()) - lo, 0).bit_length()
    change = np.empty(len(keys[0]), dtype=bool)
    change[0] = True
    if bits <= 63:
        packed = np.zeros(len(keys[0]), dtype=np.int64)
        for k, lo, shift in layout:
            packed |= (k.astype(np.int64) - lo) << shift
        order = np.argsort(packed)
        p = packed[order]
        np.not_equal(p[1:], p[:-1], out=change[1:])
    else:
        order = np.lexsort(keys[::-1])
        change[1:] = False
        for k in keys:
            s = k[order]
            change[1:] |= s[1:] != s[:-1]
    return order, np.flatnonzero(change)


def _prefix(rows: Columns, keys: list[str]) -> np.ndarray:
    """The first two key columns as one uint64 that sorts as they do."""
    hi = (rows[keys[0]].astype(np.int64) + 2**31).astype(np.uint64) << np.uint64(32)
    return hi | (rows[keys[1]].astype(np.int64) + 2**31).astype(np.uint64)


Columns = dict[str, np.ndarray]


class Rollup:
    """One rollup's rows (key columns, then value columns summed or maxed), reduced by key."""

    def __init__(self, keys: list[str], values: list[tuple[str, str]], splits: int):
        self.keys, self.values, self.splits = keys, values, splits  # values: (name, sum|max)
        self.columns = keys + [n for n, _ in values]
        self.dtype: np.dtype | None = None
        self.buffer: list[Columns] = []
        self.buffered = 0
        self.files: list[IO[bytes]] = []
        self.bounds: np.ndarray | None = None  # split i holds prefixes in [bounds[i-1], bounds[i])

    def add(self, columns: Columns) -> None:
        if self.dtype is None:
            self.dtype = np.dtype([(n, columns[n].dtype) for n in self.columns])
        self.buffer.append({n: columns[n] for n in self.columns})
        self.buffered += len(columns[self.keys[0]])
        if self.buffered >= BUFFER_ROWS:
            self._compact()

    def _concat(self, parts: list[Columns]) -> Columns:
        return {n: np.concatenate([p[n] for p in parts]) for n in self.columns}

    def _reduce(self, rows: Columns) -> Columns:
        if not len(rows[self.keys[0]]):
            return rows
        order, starts = _sort_keys([rows[k] for k in self.keys])
        out = {k: rows[k][order[starts]] for k in self.keys}
        for n, how in self.values:
            fn = np.add if how == "sum" else np.maximum
            out[n] = fn.reduceat(rows[n][order], starts)
        return out

    def _compact(self) -> None:
        rows = self._reduce(self._concat(self.buffer))
        n = len(rows[self.keys[0]])
        if n < BUFFER_ROWS // 4:  # small enough to keep (weekly_trips always is)
            self.buffer, self.buffered = [rows], n
            return
        self._spill(rows)
        self.buffer, self.buffered = [], 0

    def _spill(self, rows: Columns) -> None:
        """Append rows to the split files. Splits are ranges of the key's first two columns,
        cut at the quantiles of the first spilled rows: read back in order, each reduced on
        its own, they give the totals sorted by key (sorted inserts fill a B-tree fastest)."""
        assert self.dtype is not None
        prefix = _prefix(rows, self.keys)
        if self.bounds is None:
            s = np.sort(prefix)
            cuts = s[(np.arange(1, self.splits) * len(s)) // self.splits] if len(s) else s[:0]
            self.bounds = np.unique(cuts)
            self.files = [tempfile.TemporaryFile() for _ in range(len(self.bounds) + 1)]
        split = np.searchsorted(self.bounds, prefix, side="right")
        order = np.argsort(split, kind="stable")
        bounds = np.searchsorted(split[order], np.arange(len(self.files) + 1))
        packed = np.empty(len(order), dtype=self.dtype)
        for n in self.columns:
            packed[n] = rows[n][order]
        for i in range(len(self.files)):
            if bounds[i] < bounds[i + 1]:
                self.files[i].write(packed[bounds[i] : bounds[i + 1]].tobytes())

    def totals(self) -> Iterator[Columns]:
        """The job's rows, one per key, split by split."""
        if self.dtype is None:
            return
        rest = self._concat(self.buffer) if self.buffer else None
        self.buffer, self.buffered = [], 0
        if not self.files:
            if rest is not None:
                yield self._reduce(rest)
            return
        if rest is not None:
            self._spill(rest)
        for f in self.files:
            f.seek(0)
            packed = np.frombuffer(f.read(), dtype=self.dtype)
            yield self._reduce({n: packed[n] for n in self.columns})

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []


# The binary COPY type of each staging column (see _STAGING in service/ingest/loader.py).
_TYPES = {
    "side": "char",
    "week": "date",
    "last_at": "timestamp",
    "trips": "int8",
    "sum_ox": "float8",
    "sum_oy": "float8",
    "sum_dx": "float8",
    "sum_dy": "float8",
}


class JobRollups:
    """The three rollups of one job: fed batch by batch, read back as binary COPY streams."""

    def __init__(self, params: Params, bytes_total: int = 0):
        self.params = params
        # the blocks' totals, from the cells' totals (a job's few thousand rows)
        self._blocks = Rollup(["side", "cx", "cy", "week", "region_id"], [("trips", "sum")], 1)
        splits = int(min(max(bytes_total // SPLIT_BYTES, 1), 256))
        # the pairs' totals, streamed after the cells' (a 2M-trip job: ~0.4M keys), and their
        # ends' blocks (db/migrations/023), from the pairs' totals
        self._pairs = Rollup(["side", "cx", "cy", "week", "region_id"], [("trips", "sum")], splits)
        self._pair_ends = Rollup(["side", "cx", "cy", "week", "region_id"], [("trips", "sum")], 1)
        self.tables = {
            "weekly": Rollup(
                ["region_id", "week", "datasource_id"],
                [("trips", "sum"), ("last_at", "max")],
                1,
            ),
            "cells": Rollup(["side", "cx", "cy", "week", "region_id"], [("trips", "sum")], splits),
            "clusters": Rollup(
                ["region_id", "ocx", "ocy", "dcx", "dcy", "bucket"],
                [(n, "sum") for n in ("trips", "sum_ox", "sum_oy", "sum_dx", "sum_dy")],
                splits,
            ),
        }

    def add(
        self,
        region: np.ndarray,
        source: np.ndarray,
        ts_us: np.ndarray,
        ox: np.ndarray,
        oy: np.ndarray,
        dx: np.ndarray,
        dy: np.ndarray,
    ) -> None:
        n = len(ts_us)
        if not n:
            return
        p = self.params
        one = np.ones(n, dtype=np.int64)
        week = week_days(ts_us)
        weekly = {"region_id": region, "week": week, "datasource_id": source}
        self.tables["weekly"].add(weekly | {"trips": one, "last_at": ts_us})
        on_grid = [cells(v, p.grid) for v in (ox, oy, dx, dy)]
        for side, (cx, cy) in (("o", on_grid[:2]), ("d", on_grid[2:])):
            side_code = np.full(n, ord(side), dtype=np.uint8)
            cell = {"side": side_code, "cx": cx, "cy": cy}
            self.tables["cells"].add(cell | {"week": week, "region_id": region, "trips": one})
        pair = {"side": np.full(n, ord("P"), dtype=np.uint8)}
        pair |= {"cx": pair_keys(ox, oy), "cy": pair_keys(dx, dy)}
        self._pairs.add(pair | {"week": week, "region_id": region, "trips": one})
        # the two grids are the same by default (0.01 degrees): their cells are computed once
        c = p.cluster_cell
        ocx, ocy, dcx, dcy = on_grid if c == p.grid else [cells(v, c) for v in (ox, oy, dx, dy)]
        key = {"region_id": region, "ocx": ocx, "ocy": ocy, "dcx": dcx, "dcy": dcy}
        key["bucket"] = buckets(ts_us, p.bucket_minutes)
        sums = {"sum_ox": ox, "sum_oy": oy, "sum_dx": dx, "sum_dy": dy}
        self.tables["clusters"].add(key | {"trips": one} | sums)

    def copy_stream(self, name: str) -> Iterator[bytes]:
        """The binary COPY stream (header, one row per key, trailer) of one rollup's totals.

        The cells' stream ends with their blocks' rows (BLOCK), the pairs' (PAIR_GRID) and
        their ends' blocks."""
        table = self.tables[name]
        yield HEADER
        for rows in table.totals():
            yield from _copy_rows(table, rows)
            if len(rows[table.keys[0]]) and name == "cells":
                self._blocks.add(block_rows(rows))
        if name == "cells":
            for rows in self._blocks.totals():
                yield from _copy_rows(self._blocks, rows)
            for rows in self._pairs.totals():
                yield from _copy_rows(self._pairs, rows)
                for end in pair_end_rows(rows):
                    self._pair_ends.add(end)
            for rows in self._pair_ends.totals():
                yield from _copy_rows(self._pair_ends, rows)
        yield TRAILER

    def close(self) -> None:
        for t in self.tables.values():
            t.close()
        self._blocks.close()
        self._pairs.close()
        self._pair_ends.close()


def _copy_rows(table: Rollup, rows: Columns) -> Iterator[bytes]:
    """Binary COPY rows (no header or trailer) of some of a rollup's totals, in chunks."""
    for lo in range(0, len(rows[table.keys[0]]), ENCODE_ROWS):
        yield binary_rows(
            [(_TYPES.get(c, "int4"), rows[c][lo : lo + ENCODE_ROWS]) for c in table.columns]
        )


def block_rows(cells: Columns) -> Columns:
    """Cell rows (side 'o'/'d', cx, cy, week, region_id, trips) as rows of their blocks (side
    'O'/'D', floor(cx / BLOCK), floor(cy / BLOCK)), not yet summed."""
    return {
        "side": cells["side"] - _BLOCK_SIDE,
        "cx": np.floor_divide(cells["cx"], BLOCK),
        "cy": np.floor_divide(cells["cy"], BLOCK),
        "week": cells["week"],
        "region_id": cells["region_id"],
        "trips": cells["trips"],
    }


def pair_end_rows(pairs: Columns) -> list[Columns]:
    """Pair rows (side 'P', cx / cy = the origin's / destination's pair_keys) as rows of the
    origin's block (side 'p') and of the destination's (side 'q'), cx, cy = floor(x / PAIR_GRID),
    floor(y / PAIR_GRID), not yet summed (db/migrations/023)."""
    out: list[Columns] = []
    for side, code in (("p", pairs["cx"]), ("q", pairs["cy"])):
        out.append(
            {
                "side": np.full(len(code), ord(side), dtype=np.uint8),
                "cx": np.right_shift(code, PAIR_SHIFT).astype(np.int32),
                "cy": (np.bitwise_and(code, PAIR_ROWS - 1) - PAIR_HALF).astype(np.int32),
                "week": pairs["week"],
                "region_id": pairs["region_id"],
                "trips": pairs["trips"],
            }
        )
    return out


__all__ = [
    "pair_end_rows",
    "Params",
    "JobRollups",
    "week_days",
    "buckets",
    "cells",
    "block_rows",
    "pair_code",
    "pair_keys",
    "BLOCK",
    "PAIR_GRID",
    "PAIR_ROWS",
    "PAIR_SHIFT",
    "PAIR_HALF",
]
