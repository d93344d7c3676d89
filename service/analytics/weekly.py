"""Exact weekly averages for a region, a box or a polygon (SPEC section 2), fast at any size.

The rollup `weekly_cell_trips` counts trips per week, grid cell (floor(coordinate / cell)) and
end of the trip. An area is answered from the rollup's cells and corrected with the raw points
only where the two disagree. The raw points are read through covering B-trees keyed by (fine row
of 0.001 degrees, x) over plain coordinates (db/migrations/014; the fine rows stored as ofr and
dfr since 020): index-only scans, one descent per fine row.
- a box: the cells taken are those it covers more than half of on each axis, read as the whole
  blocks of 5 x 5 cells among them plus the fringe of cells around (inner_rects; db/migrations
  021); the raw points read are those of the box outside the taken cells (added) and those of
  the taken cells outside the box (taken off), never more than half a cell deep (box_plan);
- a polygon: the candidates are the cells of the blocks that hold trips; cells it covers are
  taken whole (as whole blocks where all 25 cells of a block are); a cell cut by its edge is
  split into sub-cells along the fine grid, classed inside / outside / cut, and counted from its
  inside sub-cells' points plus the covered points of its cut ones, or as its rollup total minus
  its outside sub-cells' points and the uncovered points of its cut ones, whichever reads fewer
  points (shape_plan).
The exact tests are plain coordinate comparisons for a box and ST_Covers for a polygon
(boundaries inclusive); the index conditions only narrow the rows read. `both` needs both ends of
a trip, which no single-end rollup holds:
- a big box: from the pair rollup (trips per week by origin block and destination block of 0.05
  degrees, db/migrations/022; `either` also by the block of each end, 023) over the blocks taken
  for the box, corrected by the trips with an end in the strips where the box and those blocks
  disagree (_both_pairs);
- a polygon, or a box whose strips would be most of it: counted from the raw points (the origin
  index carries the destination). That scan reads exactly the trips whose origin is in the area,
  so it also counts those whose destination is not, and `either` = destination + that count.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

import numpy as np
import shapely
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus

from service.analytics import columns, finegrid, pip
from service.analytics.area import Area, AreaError, BBox, Shape
from service.ingest.rollups import BLOCK, PAIR_GRID, PAIR_HALF, PAIR_ROWS, PAIR_SHIFT, pair_code

T = TypeVar("T")

# A margin, in degrees, far above floating-point error and far below any cell.
EPS = 1e-9


class UnknownRegion(LookupError):
    """No region has that name (case-insensitively)."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        shown = ", ".join(self.known[:50]) + (" …" if len(self.known) > 50 else "")
        return f"unknown region {self.name!r}; known regions: {shown or 'none yet'}"


def monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


async def region_ids(conn: AsyncConnection, name: str | None) -> list[int] | None:
    """Ids of the regions named `name` case-insensitively; None for no filter."""
    if name is None:
        return None
    cur = await conn.execute("SELECT id FROM regions WHERE lower(name) = lower(%s)", [name])
    ids = [r[0] for r in await cur.fetchall()]
    if not ids:
        cur = await conn.execute("SELECT name FROM regions ORDER BY name")
        raise UnknownRegion(name, [r[0] for r in await cur.fetchall()])
    return ids


async def grid_cell(conn: AsyncConnection) -> float:
    cur = await conn.execute("SELECT cell FROM rollup_grid")
    row = await cur.fetchone()
    assert row is not None
    return float(row[0])


async def _window(
    conn: AsyncConnection, start: date | None, end: date | None
) -> tuple[date, date] | None:
    if start is None or end is None:
        cur = await conn.execute("SELECT min(week), max(week) FROM weekly_trips")
        row = await cur.fetchone()
        first, last = row if row else (None, None)
        if start is None:
            start = first
        if end is None:
            end = last
        if start is None or end is None:
            return None
    w0, w1 = monday(start), monday(end)
    if w0 > w1:
        raise AreaError(f"from ({start}) is after to ({end})")
    return w0, w1


# More rows than this are read as one range of rows (one descent, every x of each row) rather
# than one descent per row.
MAX_ROWS = 4096


# x, y and fine row (finegrid.fine(y), stored by the loader: db/migrations/020) of each end
END_COLUMNS = {"o": ("ox", "oy", "ofr"), "d": ("dx", "dy", "dfr")}


def rows_condition(
    row: sql.Composable, y0: float, y1: float, name: str, params: dict[str, Any]
) -> sql.Composed:
    """The fine row column `row` (ofr or dfr: the fine row of the end's y, db/migrations/020) in
    the fine rows of [y0, y1], as index conditions, its values put in params."""
    lo, hi = finegrid.fine(y0), finegrid.fine(y1)
    if hi - lo + 1 <= MAX_ROWS:
        params[name] = list(range(lo, hi + 1))
        return sql.SQL("{} = ANY({}::int[])").format(row, sql.Placeholder(name))
    params[f"{name}_lo"], params[f"{name}_hi"] = lo, hi
    return sql.SQL("{} BETWEEN {} AND {}").format(
        row, sql.Placeholder(f"{name}_lo"), sql.Placeholder(f"{name}_hi")
    )


_REGION_ROLLUP = sql.SQL("""
    SELECT week, sum(trips)::bigint FROM weekly_trips
    WHERE week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY week""")

# One rectangle of rollup rows (cells, or blocks of BLOCK x BLOCK cells) of a box's inner part:
# {columns} is a range of cx, or (for the fringe strips around the blocks) `cx = ANY(...)`, one
# descent per column, which reads only the strip's rows of cy instead of every cy of each cx.
_INNER_RECT = sql.SQL("""
    SELECT week, trips FROM weekly_cell_trips
    WHERE side = {side} AND {columns} AND cy BETWEEN {y0} AND {y1}
      AND week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))""")


def _block_span(c0: int, c1: int) -> tuple[int, int]:
    """The blocks [b0, b1] whose cells all lie in cells [c0, c1] (b0 > b1: none)."""
    return -(-c0 // BLOCK), (c1 + 1) // BLOCK - 1


def inner_rects(cx0: int, cx1: int, cy0: int, cy1: int) -> list[tuple[bool, int, int, int, int]]:
    """Disjoint rectangles of rollup rows whose union is the cells [cx0, cx1] x [cy0, cy1]:
    (block, x0, x1, y0, y1). The blocks wholly inside (block = True: their indexes), then the
    fringe of cells around them, up to four strips; or the cells alone when no block fits."""
    bx0, bx1 = _block_span(cx0, cx1)
    by0, by1 = _block_span(cy0, cy1)
    if bx0 > bx1 or by0 > by1:
        return [(False, cx0, cx1, cy0, cy1)]
    kx0, kx1, ky0, ky1 = bx0 * BLOCK, (bx1 + 1) * BLOCK - 1, by0 * BLOCK, (by1 + 1) * BLOCK - 1
    fringe = [
        (False, cx0, kx0 - 1, cy0, cy1),
        (False, kx1 + 1, cx1, cy0, cy1),
        (False, kx0, kx1, cy0, ky0 - 1),
        (False, kx0, kx1, ky1 + 1, cy1),
    ]
    return [(True, bx0, bx1, by0, by1)] + [r for r in fringe if r[1] <= r[2] and r[3] <= r[4]]


def _inner_query(cells: dict[str, int], params: dict[str, Any]) -> sql.Composed:
    """The trips per week of the box's cell rectangle R, from whole blocks (params' bside) and
    fringe cells (its side)."""
    scans = []
    rects = inner_rects(cells["cx0"], cells["cx1"], cells["cy0"], cells["cy1"])
    for k, (block, x0, x1, y0, y1) in enumerate(rects):
        names = {n: f"r{k}{n}" for n in ("x0", "x1", "y0", "y1", "xs")}
        params |= {names["x0"]: x0, names["x1"]: x1, names["y0"]: y0, names["y1"]: y1}
        if block or len(rects) == 1:
            columns = sql.SQL("cx BETWEEN {} AND {}").format(
                sql.Placeholder(names["x0"]), sql.Placeholder(names["x1"])
            )
        else:
            params[names["xs"]] = list(range(x0, x1 + 1))
            columns = sql.SQL("cx = ANY({}::int[])").format(sql.Placeholder(names["xs"]))
        scans.append(
            _INNER_RECT.format(
                side=sql.Placeholder("bside" if block else "side"),
                columns=columns,
                y0=sql.Placeholder(names["y0"]),
                y1=sql.Placeholder(names["y1"]),
            )
        )
    return sql.SQL("SELECT week, sum(trips)::bigint FROM ({}) r GROUP BY week").format(
        sql.SQL(" UNION ALL ").join(scans)
    )


# The raw points where the box and the rollup's cell rectangle R disagree: +1 for a point of the
# box whose cell is outside R, -1 for a point of R's cells outside the box (see box_plan).
_BOX_EDGE = sql.SQL("""
    SELECT started_at::date,
           sum(CASE WHEN {in_box} THEN 1 ELSE -1 END)::bigint FROM ({scans}) p
    WHERE ({in_box}) IS DISTINCT FROM
          (x >= %(tx0)s AND x < %(tx1)s AND y >= %(ty0)s AND y < %(ty1)s)
    GROUP BY 1""")

_IN_BOX = sql.SQL("x BETWEEN %(minx)s AND %(maxx)s AND y BETWEEN %(miny)s AND %(maxy)s")

# One strip of a box's edge (box_plan), read through the end's (row, x) index: its fine rows,
# its x range, exactly its y range, and none of the points of the strips before it.
_STRIP_SCAN = sql.SQL("""
    SELECT {select} FROM {trips}
    WHERE {rows} AND {x} BETWEEN {x0} AND {x1} AND {y} BETWEEN {y0} AND {y1}{not_before}{extra}
      AND started_at >= %(w0)s::timestamp AND started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))""")

# The blocks of the rollup (BLOCK x BLOCK cells, db/migrations/021) that hold trips of the window
# near a polygon: only their cells can hold any (see _cells_of_blocks).
_SHAPE_BLOCKS = sql.SQL("""
    SELECT cx, cy FROM weekly_cell_trips
    WHERE side = %(bside)s AND cx BETWEEN %(qx0)s AND %(qx1)s AND cy BETWEEN %(qy0)s AND %(qy1)s
      AND week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY cx, cy""")


def _cells_of_blocks(
    blocks: list[tuple[int, int]], cx0: int, cx1: int, cy0: int, cy1: int
) -> list[tuple[int, int]]:
    """The cells of [cx0, cx1] x [cy0, cy1] in the given blocks. A block's rollup rows are the sums
    of its cells', so a cell holding trips of the window lies in a block that does: these cells
    are all of those, and a few empty ones, which cost a probe and count nothing. Reading the
    blocks reads 1/25 of the rows of reading the cells (a whole-city polygon on 10M trips: 930
    cells, all holding trips, from ~48k rollup rows took 16-28 ms)."""
    out = []
    for bx, by in blocks:
        xs = range(max(cx0, bx * BLOCK), min(cx1, bx * BLOCK + BLOCK - 1) + 1)
        ys = range(max(cy0, by * BLOCK), min(cy1, by * BLOCK + BLOCK - 1) + 1)
        out += [(x, y) for x in xs for y in ys]
    return out


# The rollup rows of listed keys: {xs}, {ys} and {side} are the placeholders of the cells'
# (wcx, wcy, side) or of the blocks' (wbx, wby, bside).
_WHOLE_ROWS = sql.SQL("""
        SELECT w.week, w.trips AS n
        FROM unnest({xs}::int[], {ys}::int[]) AS c(cx, cy)
        JOIN weekly_cell_trips w ON w.side = {side} AND w.cx = c.cx AND w.cy = c.cy
        WHERE w.week BETWEEN %(w0)s AND %(w1)s
          AND (%(regions)s::int[] IS NULL OR w.region_id = ANY(%(regions)s::int[]))""")


def _whole_rows(xs: str, ys: str, side: str) -> sql.Composed:
    """_WHOLE_ROWS over the keys in the params named xs, ys and side."""
    return _WHOLE_ROWS.format(
        xs=sql.Placeholder(xs), ys=sql.Placeholder(ys), side=sql.Placeholder(side)
    )


# Rollup totals of the cells and blocks counted whole ({cells}, {blocks}: _WHOLE_ROWS), plus the
# raw points of the probes (shape_plan): a run of fine cells of one fine row within one rollup
# cell, read through the end's (row, x) index, each point counted by the probe's kind. A probe's
# cell and fine columns are its ranges of doubles [x0, x1) and [y0, y1) (probe_bounds).
_SHAPE_QUERY = sql.SQL("""
    WITH area AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s), 4326) AS geom)
    SELECT week, sum(n)::bigint FROM ({cells}
        UNION ALL{blocks}
        UNION ALL
        SELECT t.started_at::date,
               CASE p.kind WHEN 1 THEN 1 WHEN -1 THEN -1
                           WHEN 2 THEN CASE WHEN ST_Covers(area.geom, {point}) THEN 1 ELSE 0 END
                           ELSE CASE WHEN ST_Covers(area.geom, {point}) THEN 0 ELSE -1 END END
        FROM unnest(%(pfr)s::int[], %(px0)s::float8[], %(px1)s::float8[], %(py0)s::float8[],
                    %(py1)s::float8[], %(pkind)s::int[]) AS p(fr, x0, x1, y0, y1, kind)
        JOIN {trips} t ON {row} = p.fr AND t.{x} >= p.x0 AND t.{x} < p.x1
        CROSS JOIN area
        WHERE t.{y} >= p.y0 AND t.{y} < p.y1
          AND t.started_at >= %(w0)s::timestamp
          AND t.started_at < %(w1)s::timestamp + interval '7 days'
          AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
    ) parts
    GROUP BY week""")

# The trips whose origin is in the area (its rows and x range, through the origin index, which
# carries the destination), and whose destination is {dest}: in the area (both) or not (the
# part of either that destination's query does not count). `dx + 0` (the same double) keeps the
# planner from ANDing in a scan of the whole destination index for `dx BETWEEN` (seen: 170 of
# 228 ms).
_BOTH_BOX = sql.SQL("""
    SELECT started_at::date, count(*) FROM {trips}
    WHERE {rows} AND ox BETWEEN %(minx)s AND %(maxx)s AND oy BETWEEN %(miny)s AND %(maxy)s
      AND {dest}
      AND started_at >= %(w0)s::timestamp AND started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")
_DEST_IN_BOX = "dx + 0 BETWEEN %(minx)s AND %(maxx)s AND dy BETWEEN %(miny)s AND %(maxy)s"

_BOTH_SHAPE = sql.SQL("""
    WITH area AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s), 4326) AS geom)
    SELECT t.started_at::date, count(*) FROM trips t CROSS JOIN area
    WHERE {rows} AND t.ox BETWEEN %(minx)s AND %(maxx)s AND t.oy BETWEEN %(miny)s AND %(maxy)s
      AND ST_Covers(area.geom, ST_SetSRID(ST_MakePoint(t.ox, t.oy), 4326))
      AND {dest}
      AND t.started_at >= %(w0)s::timestamp
      AND t.started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")


def _cell_span(lo: float, hi: float, g: float) -> tuple[int, int]:
    """The cells [c0, c1] of one axis that the rollup answers for the interval [lo, hi].

    Cells wholly inside are always in; a cell cut by an end of the interval is in when the
    interval covers more than half of it: the raw points then read are those of the part left
    out (never more than half a cell), rather than those of the part inside."""
    first, last = math.floor(lo / g), math.floor(hi / g)
    if first == last:
        return (first, first) if hi - lo > g / 2 else (first + 1, first)
    c0 = first if (first + 1) * g - lo > g / 2 else first + 1
    c1 = last if hi - last * g > g / 2 else last - 1
    return c0, c1


def _first_of_cells(c: np.ndarray, g: float) -> np.ndarray:
    """For each cell c, the least double x with floor(x / g) >= c. x / g is correctly rounded,
    so floor(x / g) is monotone in x: c0 <= floor(x / g) <= c1 exactly when
    _first_of_cells(c0) <= x < _first_of_cells(c1 + 1), two comparisons instead of a division, a
    floor and a cast per point, with the same answer for every double."""
    return _least_doubles(lambda v: np.floor(v / g), c, c * g)


def _least_doubles(
    key: Callable[[np.ndarray], np.ndarray], c: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """For each i, the least double x with key(x) >= c[i], for a key monotone in x, found by
    single steps (nextafter) from start[i], which must lie within a few steps of it."""
    x = np.array(start, dtype=np.float64)
    for direction, wrong in ((-np.inf, lambda v: key(v) >= c), (np.inf, lambda v: key(v) < c)):
        for _ in range(_MAX_STEPS):
            off = wrong(x)
            if not off.any():
                break
            x[off] = np.nextafter(x[off], direction)
        else:
            raise RuntimeError("no bound within _MAX_STEPS doubles of the start")
    return x


_MAX_STEPS = 4096


def probe_bounds(
    cx: np.ndarray, cy: np.ndarray, c0: np.ndarray, c1: np.ndarray, g: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x0, x1, y0, y1 of probes (shape_plan): the doubles x with floor(x / g) = cx and
    finegrid.fine(x) in [c0, c1] are exactly x0 <= x < x1, those y with floor(y / g) = cy
    exactly y0 <= y < y1 (both functions are monotone in x: see _first_of_cells), so the query
    compares instead of computing them per point."""
    fine_lo = _least_doubles(finegrid.fine_array, c0, finegrid.bounds(c0)[0])
    fine_hi = _least_doubles(finegrid.fine_array, c1 + 1, finegrid.bounds(c1 + 1)[0])
    x0 = np.maximum(_first_of_cells(cx, g), fine_lo)
    x1 = np.minimum(_first_of_cells(cx + 1, g), fine_hi)
    return x0, x1, _first_of_cells(cy, g), _first_of_cells(cy + 1, g)


def cell_range_bounds(cells: dict[str, int], g: float) -> dict[str, float]:
    """tx0, tx1, ty0, ty1: the cells [cx0, cx1] x [cy0, cy1] of grid g as the doubles
    tx0 <= x < tx1, ty0 <= y < ty1 (_first_of_cells)."""
    c = np.array([cells["cx0"], cells["cx1"] + 1, cells["cy0"], cells["cy1"] + 1], dtype=np.int64)
    return dict(zip(("tx0", "tx1", "ty0", "ty1"), _first_of_cells(c, g).tolist(), strict=True))


def box_plan(box: BBox, g: float) -> tuple[dict[str, Any], list[tuple[float, float, float, float]]]:
    """The rollup's cell rectangle R for a box, and strips that hold every point on which the
    box and R disagree (in the box with its cell outside R, or in a cell of R outside the box).

    trips in box = rollup(R) + #(in box, cell not in R) - #(cell in R, not in box). A point
    inside both the box and R's extent by more than EPS is in both (floor is monotone and the
    error of x / g is far below EPS / g), so the strips are the bounding rectangle U of both,
    minus that core, widened by EPS.
    """
    cx0, cx1 = _cell_span(box.minx, box.maxx, g)
    cy0, cy1 = _cell_span(box.miny, box.maxy, g)
    cells = {"cx0": cx0, "cx1": cx1, "cy0": cy0, "cy1": cy1}
    if cx0 > cx1 or cy0 > cy1:  # R is empty (no cell passes both spans): the whole box is read
        return cells, [(box.minx, box.miny, box.maxx, box.maxy)]
    rx0, ry0, rx1, ry1 = cx0 * g, cy0 * g, (cx1 + 1) * g, (cy1 + 1) * g
    ux0, uy0 = min(box.minx, rx0) - EPS, min(box.miny, ry0) - EPS
    ux1, uy1 = max(box.maxx, rx1) + EPS, max(box.maxy, ry1) + EPS
    kx0, ky0 = max(box.minx, rx0) + EPS, max(box.miny, ry0) + EPS
    kx1, ky1 = min(box.maxx, rx1) - EPS, min(box.maxy, ry1) - EPS
    if kx0 >= kx1 or ky0 >= ky1:  # no core (degenerate): U as a whole
        return cells, [(ux0, uy0, ux1, uy1)]
    return cells, [
        (ux0, uy0, kx0, uy1),
        (kx1, uy0, ux1, uy1),
        (kx0, uy0, kx1, ky0),
        (kx0, ky1, kx1, uy1),
    ]


@dataclass
class ShapePlan:
    """Cells counted whole from the rollup, and probes of raw points: (cx, cy, fr, c0, c1, kind)
    = the points of rollup cell (cx, cy) in fine row fr and fine columns c0..c1 (finegrid); kind
    1 counts each point, -1 takes each point off, 2 counts the points the polygon covers, -2
    takes off those it does not."""

    whole: list[tuple[int, int]] = field(default_factory=list)
    probes: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)


def _runs(flags: np.ndarray) -> list[tuple[int, int, int]]:
    """(j, i0, i1) runs of True in a grid indexed [j, i], row by row."""
    edges = np.diff(np.pad(flags, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)  # row-major: a row's starts and ends pair in order
    _, ends = np.nonzero(edges == -1)
    return list(zip(rows.tolist(), starts.tolist(), (ends - 1).tolist(), strict=True))


def shape_plan(geom: Any, cells: list[tuple[int, int]], g: float) -> ShapePlan:
    """How to count a polygon's points exactly over the rollup cells `cells` (cx, cy).

    A cell whose box (widened by EPS) the polygon covers is counted whole from the rollup; one it
    does not touch is skipped. A cell cut by the edge is split into the fine cells of the
    raw-point indexes (finegrid: ten by ten in a 0.01-degree cell), each classed the same way
    (inside, outside, cut). Its count is either the points of its inside fine cells plus the
    covered points of its cut ones, or, when the outside is the smaller part, the rollup's total
    minus the points of its outside fine cells and the uncovered points of its cut ones: only the
    points of the cut fine cells meet ST_Covers, and at most half of the rest are read. A point
    belongs to the fine cell of its rollup cell and of finegrid.fine of its coordinates, which
    lies in the intersection of the two boxes up to rounding far below EPS; so classing that
    intersection widened by EPS is exact for every point of the fine cell: a point more than EPS
    inside (outside) the polygon is covered (not covered) whatever the predicate's rounding.
    """
    plan = ShapePlan()
    if not cells:
        return plan
    shapely.prepare(geom)
    cx, cy = (np.array([c[k] for c in cells], dtype=np.int64) for k in range(2))
    whole, touches = cell_classes(geom, cx, cy, g)
    plan.whole = [(int(a), int(b)) for a, b in zip(cx[whole], cy[whole], strict=True)]
    partial = touches & ~whole
    if partial.any():
        _split(geom, cx[partial], cy[partial], g, plan)
    return plan


def cell_classes(
    geom: Any, cx: np.ndarray, cy: np.ndarray, g: float
) -> tuple[np.ndarray, np.ndarray]:
    """Whether the polygon covers each cell (cx, cy) of grid g, its box widened by EPS (so every
    point of the cell is covered), and whether it meets that box."""
    boxes = shapely.box(cx * g - EPS, cy * g - EPS, (cx + 1) * g + EPS, (cy + 1) * g + EPS)
    return shapely.covers(geom, boxes), shapely.intersects(geom, boxes)


def _fine_of_cells(c: np.ndarray, g: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rollup cells c of one axis: the first fine index that can hold a point of each, and
    the [lo, hi] extent within the cell of each of the k fine cells from it (lo > hi by more
    than EPS: that fine cell misses the cell). With the rollup grid of the fine grid's cells
    (g = finegrid.BASE, the default) these are exactly the cell's ten fine cells: the general
    bounds would add a fine row of each neighbour, which touches the cell within EPS (20 polygon
    queries on 10M trips: 1,102-1,153 ms against 1,267-1,286, same answers)."""
    lo_c, hi_c = c * g, (c + 1) * g
    if g == finegrid.BASE:
        f0 = c * finegrid.PER
        k = finegrid.PER
    else:
        f0 = finegrid.fine_array(lo_c - EPS)
        k = int((finegrid.fine_array(hi_c + EPS) - f0).max()) + 1
    f = f0[:, None] + np.arange(k)[None]
    flo, fhi = finegrid.bounds(f)
    return f0, np.maximum(lo_c[:, None], flo), np.minimum(hi_c[:, None], fhi)


def _child_classes(
    geom: Any, xlo: np.ndarray, xhi: np.ndarray, ylo: np.ndarray, yhi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rectangles cut into grids of children: child (j, i) of rectangle m spans [xlo[m, i],
    xhi[m, i]] x [ylo[m, j], yhi[m, j]]. Whether the polygon covers each child's box widened by
    EPS (inside) and whether it misses it (outside), as arrays [m, j, i].

    The children are classed by quarters first: a quarter's box, the hull of its children's
    boxes, contains each of them, so a quarter covered (missed) is so for all its children, and
    only the children of the quarters the edge cuts are classed one by one: about half the
    predicates, and the boxes, of classing every child (the benchmark's biggest polygon, 930
    cells: shape_plan 49 -> 32 ms, fine_cells 71 -> 55 ms, medians of 7, twice alternated)."""
    m, kx, ky = xlo.shape[0], xlo.shape[1], ylo.shape[1]
    inside = np.zeros((m, ky, kx), dtype=bool)
    outside = np.zeros((m, ky, kx), dtype=bool)
    if not m:
        return inside, outside
    for j0, j1 in ((0, ky // 2), (ky // 2, ky)):
        for i0, i1 in ((0, kx // 2), (kx // 2, kx)):
            if j0 == j1 or i0 == i1:
                continue
            hull = shapely.box(
                xlo[:, i0:i1].min(axis=1) - EPS,
                ylo[:, j0:j1].min(axis=1) - EPS,
                xhi[:, i0:i1].max(axis=1) + EPS,
                yhi[:, j0:j1].max(axis=1) + EPS,
            )
            covered = shapely.covers(geom, hull)
            missed = ~shapely.intersects(geom, hull)
            inside[:, j0:j1, i0:i1] = covered[:, None, None]
            outside[:, j0:j1, i0:i1] = missed[:, None, None]
            cut = ~covered & ~missed
            if not cut.any():
                continue
            shape = (int(cut.sum()), j1 - j0, i1 - i0)
            x0, x1 = xlo[cut, None, i0:i1], xhi[cut, None, i0:i1]
            y0, y1 = ylo[cut, j0:j1, None], yhi[cut, j0:j1, None]
            children = shapely.box(
                np.broadcast_to(x0, shape) - EPS,
                np.broadcast_to(y0, shape) - EPS,
                np.broadcast_to(x1, shape) + EPS,
                np.broadcast_to(y1, shape) + EPS,
            )
            inside[cut, j0:j1, i0:i1] = shapely.covers(geom, children)
            outside[cut, j0:j1, i0:i1] = ~shapely.intersects(geom, children)
    return inside, outside


def _split(geom: Any, cx: np.ndarray, cy: np.ndarray, g: float, plan: ShapePlan) -> None:
    fx0, xlo, xhi = _fine_of_cells(cx, g)
    fy0, ylo, yhi = _fine_of_cells(cy, g)
    # [m, j, i]: fine row fy0 + j, fine column fx0 + i of cut cell m
    shape = (len(cx), ylo.shape[1], xlo.shape[1])
    valid = np.broadcast_to(
        (xlo[:, None, :] <= xhi[:, None, :] + EPS) & (ylo[:, :, None] <= yhi[:, :, None] + EPS),
        shape,
    )
    inside, outside = _child_classes(geom, xlo, xhi, ylo, yhi)
    inside &= valid
    outside &= valid
    cut = valid & ~inside & ~outside
    # the complement: total - outside - uncovered
    complement = outside.sum(axis=(1, 2)) < inside.sum(axis=(1, 2))
    counted = np.where(complement[:, None, None], outside, inside)
    a, b, c = cx.tolist(), cy.tolist(), complement.tolist()
    plan.whole += [(a[m], b[m]) for m in range(len(a)) if c[m]]
    f_x, f_y, rows = fx0.tolist(), fy0.tolist(), shape[1]
    probes = []
    # the runs of all cut cells at once (row m * rows + j is fine row j of cell m), each cell's
    # counted runs before its cut ones, as one cell at a time would give them
    for order, flags in enumerate((counted, cut)):
        for r, i0, i1 in _runs(flags.reshape(-1, shape[2])):
            m, j = divmod(r, rows)
            kind = (order + 1) * (-1 if c[m] else 1)
            probes.append((m, order, (a[m], b[m], f_y[m] + j, f_x[m] + i0, f_x[m] + i1, kind)))
    probes.sort(key=lambda q: q[:2])  # stable
    plan.probes += [q[2] for q in probes]


# The trips of a polygon's origins (both, or the origin-only part of either, as _BOTH_BOX), through
# its fine cells (fine_cells): the origin index is read along each fine row the polygon touches.
# An origin in the row's inside span [ia, ib) is covered with no further test (most of them, in a
# big polygon); any other end is tested by its fine cell's class, with ST_Covers only in the cells
# the edge cuts.
_BOTH_FINE = sql.SQL("""
    WITH area AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s), 4326) AS geom)
    SELECT t.started_at::date, count(*)
    FROM unnest(%(prow)s::int[], %(px0)s::float8[], %(px1)s::float8[], %(pia)s::float8[],
                %(pib)s::float8[]) AS p(r, x0, x1, ia, ib)
    JOIN {trips} t ON {orow} = p.r AND t.ox BETWEEN p.x0 AND p.x1
    CROSS JOIN area
    WHERE ((t.ox >= p.ia AND t.ox < p.ib) OR CASE {oclass} WHEN 1 THEN true
          WHEN 2 THEN ST_Covers(area.geom, ST_SetSRID(ST_MakePoint(t.ox, t.oy), 4326))
          ELSE false END)
      AND {dest}
      AND t.started_at >= %(w0)s::timestamp
      AND t.started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")
# The class of a point's cell of 0.001 degrees (floor(x / 0.001), floor(y / 0.001); two
# divisions, cheaper than finegrid's rows) within the polygon's bounds: one byte per cell of a
# grid passed as one bytea (0 outside, 1 inside, 2 cut), read with get_byte: one parameter
# whatever the polygon (arrays of cell keys cost the planner up to 185 ms).
_KEY_STEP = 0.001
_CLASS = (
    "CASE WHEN {x} BETWEEN %(minx)s AND %(maxx)s AND {y} BETWEEN %(miny)s AND %(maxy)s"
    " THEN get_byte(%(classes)s::bytea, (floor({x} / 0.001::double precision)::int - %(kx0)s)"
    " * %(kh)s + floor({y} / 0.001::double precision)::int - %(ky0)s) ELSE 0 END"
)
# A destination in the polygon: in its bounds, then by its fine cell's class (_BOTH_FINE) or by
# ST_Covers (_BOTH_SHAPE).
_DEST_IN_BOUNDS = "t.dx + 0 BETWEEN %(minx)s AND %(maxx)s AND t.dy BETWEEN %(miny)s AND %(maxy)s"
_DEST_IN_FINE = f"""{_DEST_IN_BOUNDS}
      AND CASE {{dclass}} WHEN 1 THEN true
          WHEN 2 THEN ST_Covers(area.geom, ST_SetSRID(ST_MakePoint(t.dx, t.dy), 4326))
          ELSE false END"""
_DEST_IN_SHAPE = f"""{_DEST_IN_BOUNDS}
      AND ST_Covers(area.geom, ST_SetSRID(ST_MakePoint(t.dx, t.dy), 4326))"""
_BLOCK = 10  # cells of 0.001 degrees per side of the blocks classed first (_classes)
# Beyond this many fine cells in its bounds, a polygon's `both` tests every point with ST_Covers.
MAX_FINE_CELLS = 250_000


@dataclass
class FineCells:
    """A polygon's cells of 0.001 degrees from (kx0, ky0), kh per column: the class of each
    (0 outside, 1 covered, 2 cut by its edge) at (kx - kx0) * kh + (ky - ky0); and the fine rows
    it meets, with its x range in each and the row's longest run of covered cells [ia, ib)
    (empty, 0 to 0, when it has none)."""

    kx0: int
    ky0: int
    kh: int
    classes: bytes
    rows: list[int]
    x0: list[float]
    x1: list[float]
    ia: list[float]
    ib: list[float]


def fine_cells(geom: Any) -> FineCells | None:
    """The polygon's cells of 0.001 degrees in its bounds (None when there are too many), classed:
    a point belongs to the cell of floor(x / 0.001), floor(y / 0.001), which lies in the cell's
    box up to rounding far below EPS, so classing the box widened by EPS is exact for all its
    points. And the fine rows (finegrid) that the polygon meets, each with the x range of the
    polygon within the row (widened by EPS): every covered point is in one of them.

    Fine row f and the cells' row ky = f have the same bounds up to rounding far below EPS
    (finegrid.bounds), so a point of fine row f with ia <= x < ib lies in the EPS-widened boxes
    of the row's covered cells kx0 + i0 .. kx0 + i1 (ia = their first bound, ib their last): it
    is covered."""
    minx, miny, maxx, maxy = geom.bounds
    kx0, kx1 = math.floor((minx - EPS) / _KEY_STEP), math.floor((maxx + EPS) / _KEY_STEP)
    ky0, ky1 = math.floor((miny - EPS) / _KEY_STEP), math.floor((maxy + EPS) / _KEY_STEP)
    if (kx1 - kx0 + 1) * (ky1 - ky0 + 1) > MAX_FINE_CELLS:
        return None
    shapely.prepare(geom)
    kx, ky = np.meshgrid(np.arange(kx0, kx1 + 1), np.arange(ky0, ky1 + 1), indexing="ij")
    classes = _classes(geom, kx, ky)
    f = np.arange(finegrid.fine(miny - EPS), finegrid.fine(maxy + EPS) + 1)
    lo, hi = finegrid.bounds(f)
    parts = shapely.intersection(geom, shapely.box(minx - 1, lo - EPS, maxx + 1, hi + EPS))
    met = ~shapely.is_empty(parts)
    ext = shapely.bounds(parts[met])
    rows = f[met]
    ia, ib = _inside_spans(classes, rows - ky0, kx0)
    return FineCells(
        kx0,
        ky0,
        ky1 - ky0 + 1,
        classes.astype(np.uint8).tobytes(),  # [kx, ky] in row-major order
        rows.tolist(),
        (ext[:, 0] - EPS).tolist(),
        (ext[:, 2] + EPS).tolist(),
        ia,
        ib,
    )


def _classes(geom: Any, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """The class of each cell (kx, ky) of 0.001 degrees: 1 when the polygon covers its box widened
    by EPS, 0 when it does not meet it, else 2. Classed by blocks of BLOCK x BLOCK cells first: a
    cell's widened box lies in its block's (the same products of integers and _KEY_STEP bound
    both), so a block covered or missed classes all its cells, and only the cells of blocks cut
    by the edge are classed, by quarters of the block first (_child_classes)."""
    s, b = _KEY_STEP, _BLOCK

    def boxes(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        return shapely.box(x0 * s - EPS, y0 * s - EPS, x1 * s + EPS, y1 * s + EPS)

    bx, by = np.floor_divide(kx, b), np.floor_divide(ky, b)
    bx0, by0 = int(bx.min()), int(by.min())
    gx, gy = np.meshgrid(
        np.arange(bx0, int(bx.max()) + 1), np.arange(by0, int(by.max()) + 1), indexing="ij"
    )
    block_boxes = boxes(gx * b, gy * b, (gx + 1) * b, (gy + 1) * b)
    covered = shapely.covers(geom, block_boxes)
    cut = shapely.intersects(geom, block_boxes) & ~covered
    at = (bx - bx0, by - by0)  # each cell's block
    classes = np.where(covered[at], 1, 0)
    one = cut[at]
    if one.any():
        # the cells of the cut blocks, classed by quarters (_child_classes): the same boxes,
        # (k * s, (k + 1) * s) widened by EPS, as one by one
        n = np.zeros(cut.shape, dtype=np.int64)
        n[cut] = np.arange(int(cut.sum()))  # each cut block's place among them
        kxs, kys = gx[cut][:, None] * b + np.arange(b), gy[cut][:, None] * b + np.arange(b)
        inside, outside = _child_classes(geom, kxs * s, (kxs + 1) * s, kys * s, (kys + 1) * s)
        which = n[at][one]
        j, i = ky[one] - kys[which, 0], kx[one] - kxs[which, 0]
        classes[one] = np.where(inside[which, j, i], 1, np.where(outside[which, j, i], 0, 2))
    return classes


def _inside_spans(classes: np.ndarray, j: np.ndarray, kx0: int) -> tuple[list[float], list[float]]:
    """[ia, ib) of the longest run of covered cells (class 1) in each row j of classes[kx, ky]
    (0 to 0 for a row with none, or outside the grid)."""
    held = (j >= 0) & (j < classes.shape[1])
    inside = np.zeros((len(j), classes.shape[0]), dtype=bool)
    inside[held] = (classes[:, j[held]] == 1).T
    ia, ib = np.zeros(len(j)), np.zeros(len(j))
    longest = np.zeros(len(j), dtype=np.int64)
    for row, i0, i1 in _runs(inside):
        if i1 - i0 + 1 > longest[row]:
            longest[row] = i1 - i0 + 1
            ia[row], ib[row] = (kx0 + i0) * _KEY_STEP, (kx0 + i1 + 1) * _KEY_STEP
    return ia.tolist(), ib.tolist()


@dataclass
class Part:
    """One query of (day or week, trips) rows, its counts added (sign 1) or taken off (-1)."""

    query: sql.Composable
    params: dict[str, Any]
    sign: int = 1


@dataclass
class CopyPart:
    """Trips per week from the columnar copies of the job tables (service/analytics/columns.py),
    computed in a thread (numpy)."""

    compute: Callable[[], Counter[date]]


def _raw_table(copies: list[columns.Copy] | None) -> sql.Identifier:
    """The table of a read's raw points in PostgreSQL: `trips`, or, when the copies answer for
    every job table of the read's snapshot, trips_p0 alone (the small jobs' rows)."""
    return sql.Identifier("trips" if copies is None else "trips_p0")


# A second connection for a query's parts, or None when none is free: see run_parts.
Spare = Callable[[], AbstractAsyncContextManager[AsyncConnection | None]]

_NO_SORT = "SET LOCAL enable_sort = off"
# The reads of `both` and `either` run without PostgreSQL's parallel workers: their parts already
# fill the two cores on two connections (run_parts), and the workers of each only contend with
# them. Origin and destination reads keep theirs, which fill a core that a lopsided part leaves
# idle (ab-no-parallel-workers-10000000-2026-12-03.log).
_SERIAL = "SET LOCAL max_parallel_workers_per_gather = 0"


def _read_settings(serial: bool) -> list[sql.Composable]:
    """A weekly read's transaction settings: sorts off (see _rows), and with `serial` no
    parallel workers (_SERIAL)."""
    return [sql.SQL(_NO_SORT), *([sql.SQL(_SERIAL)] if serial else [])]


async def _begin_read(
    conn: AsyncConnection,
    snapshot: str | None = None,
    attached: bool = False,
    serial: bool = False,
) -> Any:
    """Make the transaction just begun on `conn` a read-only snapshot (the one exported as
    `snapshot`, when given), with _read_settings(serial); with `attached`, the row of _ATTACHED
    as the snapshot sees it (the tables attached to `trips`, their names and the store's
    identity). One round trip."""
    statements: list[sql.Composable] = [
        sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    ]
    if snapshot is not None:
        # the snapshot's name comes from the server; SET takes no bound parameter
        statements.append(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    statements += _read_settings(serial)
    if attached:
        statements.append(sql.SQL(_ATTACHED))
    cur = await conn.execute(sql.SQL("; ").join(statements))
    if not attached:
        return None
    while cur.nextset():  # to the last statement's rows
        pass
    return await cur.fetchone()


def _tables(row: Any) -> list[int]:
    return list(row[0] or []) if row else []


# The tables attached to `trips` (the jobs' own tables and trips_p0), as a snapshot or the
# current catalog sees them. A job's table is attached by the job's commit, but its rows were
# COPY FREEZE'd earlier (service/ingest/loader.py): frozen rows are visible to every snapshot,
# and a statement planned after the attach reads the new table, whatever its snapshot, while
# the job's rollup rows (plain MVCC rows) stay out of a snapshot taken before the commit. A
# read whose raw parts may have been planned after such an attach is not one state of the store.
# The same row names the tables and the store's identity, which choose the columnar copies
# (columns.IDENTITY; its first column is the list of tables).
_ATTACHED = columns.IDENTITY
# Attempts of a read made again when a job's table was attached while it ran (_consistent);
# the one after them keeps attaches out with a lock.
OPTIMISTIC_READS = 4
# Taken before the snapshot (LOCK TABLE takes none), it makes ATTACH PARTITION (SHARE UPDATE
# EXCLUSIVE on the parent) wait for the read's end; ONLY: the partitions' own writers (a small
# job's rows into trips_p0) go on. Not allowed in a READ ONLY transaction.
_HOLD_ATTACHES = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; LOCK TABLE ONLY trips IN SHARE MODE"
)


async def _attached(conn: AsyncConnection) -> list[int]:
    """The tables attached to `trips` now (outside any transaction of the caller's)."""
    if not conn.autocommit:
        async with conn.transaction():
            return await _attached_now(conn)
    return await _attached_now(conn)


async def _attached_now(conn: AsyncConnection) -> list[int]:
    cur = await conn.execute(_ATTACHED)
    return _tables(await cur.fetchone())


async def _consistent(
    conn: AsyncConnection,
    read: Callable[[AsyncConnection, columns.Identity | None], Awaitable[T]],
    raw: bool,
    serial: bool = False,
) -> T:
    """read(conn) in one read-only snapshot, as one state of the store.

    A read of raw trips (`raw`) may see a job's trips without its rollup rows when the job's
    table is attached after the snapshot (_ATTACHED). Attaches are rare (one per large job) and
    only ever add tables: so the snapshot's attached tables are read with it, and the catalog's
    after the read; the same list means every statement planned only tables the snapshot knew,
    and the answer stands; otherwise the read is made again. After OPTIMISTIC_READS attempts,
    the last one holds attaches off (_HOLD_ATTACHES) while it reads. In the caller's own
    transaction, the caller chose the snapshot: read(conn) once, as it comes. Every read has
    _read_settings(serial).

    read(conn, identity) is given the snapshot's identity (columns.Identity: its attached tables),
    which lets it read the job tables from their columnar copies when every one has a copy; a
    read in the caller's transaction or under the lock gets None (PostgreSQL alone)."""
    settings = _read_settings(serial)
    if not _idle(conn):
        await conn.execute(sql.SQL("; ").join(settings))
        return await read(conn, None)
    for _ in range(OPTIMISTIC_READS if raw else 1):
        async with conn.transaction():
            row = await _begin_read(conn, attached=raw, serial=serial)
            result = await read(conn, columns.identity(row) if raw else None)
        if not raw or await _attached(conn) == _tables(row):
            return result
    async with conn.transaction():
        await conn.execute(sql.SQL("; ").join([sql.SQL(_HOLD_ATTACHES), *settings]))
        return await read(conn, None)


async def _rows(conn: AsyncConnection, part: Part | CopyPart) -> Counter[date]:
    """Trips per week from a part, times its sign, on a connection inside a read transaction.

    Never prepared: a prepared statement switches to a generic plan after five runs, which
    cannot see the sizes of the row and probe arrays (on 10M trips, warm bbox_both max 478 ms
    prepared vs 250 ms not). Sorts off: the planner, which cannot estimate how many points the
    probes return, otherwise sorts them all by week for a GroupAggregate where hashing into the
    few weeks is cheaper (the Turin polygon: 170 -> 130 ms).

    The raw points are grouped by day (started_at::date), folded here into their weeks: the cast
    is cheaper than date_trunc('week', ...) (a whole-city polygon's both: 157 -> 142 ms per half);
    the rollups' rows are weeks already (Mondays, which fold to themselves).

    A CopyPart is computed in a thread."""
    if isinstance(part, CopyPart):
        return await asyncio.to_thread(part.compute)
    cur = await conn.execute(part.query, part.params, prepare=False)  # type: ignore[call-overload]
    weeks: Counter[date] = Counter()
    for day, n in await cur.fetchall():
        weeks[monday(day)] += part.sign * int(n)
    return weeks


async def run_parts(
    conn: AsyncConnection,
    parts: list[Part | CopyPart],
    spare: Spare | None = None,
    serial: bool = False,
) -> Counter[date]:
    """The sum of the parts, read on `conn` (inside its read transaction) and, when there are
    several parts and `spare` gives a connection, on that one too: two workers take the parts in
    order, so a query's big scans, split in two, run on both cores of the server. The spare
    connection imports the first one's snapshot (pg_export_snapshot), so every part sees the
    same committed trips, as one query would, with the settings of `conn`'s read
    (_read_settings(serial), which its caller made)."""
    total: Counter[date] = Counter()
    if len(parts) < 2 or spare is None:
        for part in parts:
            total.update(await _rows(conn, part))
        return total
    async with spare() as other:
        if other is None:
            return await run_parts(conn, parts)
        cur = await conn.execute("SELECT pg_export_snapshot()")
        snapshot = (await cur.fetchone())[0]  # type: ignore[index]
        queue = deque(parts)

        async def work(c: AsyncConnection) -> None:
            while queue:
                total.update(await _rows(c, queue.popleft()))

        async with other.transaction():
            await _begin_read(other, snapshot, serial=serial)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(work(conn))
                tg.create_task(work(other))
    return total


def _in_strip(x: sql.Composable, y: sql.Composable, k: int) -> sql.Composed:
    """The point (x, y) in strip k (its bounds in params s{k}x0 .. s{k}y1)."""
    return sql.SQL("({x} BETWEEN {a} AND {c} AND {y} BETWEEN {b} AND {d})").format(
        x=x,
        y=y,
        a=sql.Placeholder(f"s{k}x0"),
        b=sql.Placeholder(f"s{k}y0"),
        c=sql.Placeholder(f"s{k}x1"),
        d=sql.Placeholder(f"s{k}y1"),
    )


def _strip_scans(
    x: sql.Identifier,
    y: sql.Identifier,
    row: sql.Identifier,
    strips: list[tuple[float, float, float, float]],
    params: dict[str, Any],
    select: sql.Composable | None = None,
    extra: sql.Composable = sql.SQL(""),
    trips: sql.Composable = sql.Identifier("trips"),
) -> list[sql.Composed]:
    """One index scan per strip; together they read each point of the strips' union once (a
    strip leaves out the points of the strips before it). Each scan returns `select` (by
    default started_at, x and y) of the points of `trips` (the table or trips_p0, see
    _raw_table) that also meet `extra` (" AND ...")."""
    if select is None:
        select = sql.SQL("started_at, {} AS x, {} AS y").format(x, y)
    scans = []
    for k, (x0, y0, x1, y1) in enumerate(strips):
        params |= {f"s{k}x0": x0, f"s{k}y0": y0, f"s{k}x1": x1, f"s{k}y1": y1}
        not_before = sql.SQL("").join(
            sql.SQL(" AND NOT {}").format(_in_strip(x, y, j)) for j in range(k)
        )
        scans.append(
            _STRIP_SCAN.format(
                select=select,
                extra=extra,
                x=x,
                y=y,
                rows=rows_condition(row, y0, y1, f"s{k}rows", params),
                x0=sql.Placeholder(f"s{k}x0"),
                x1=sql.Placeholder(f"s{k}x1"),
                y0=sql.Placeholder(f"s{k}y0"),
                y1=sql.Placeholder(f"s{k}y1"),
                not_before=not_before,
                trips=trips,
            )
        )
    return scans


def _halves(params: dict[str, Any], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The params twice, each with every other element of the arrays `names` (interleaved, so
    that both halves get their share of a dense part of the area); once when every array is too
    short. A half left with no element in any of the arrays is dropped."""
    if all(len(params[n]) < 2 for n in names):
        return [params]
    halves = [params | {n: params[n][k::2] for n in names} for k in range(2)]
    return [h for h in halves if any(h[n] for n in names)]


# Above this many fine rows in all, a box's edge strips are dealt between two parts row by row
# (_edge_halves); below, two strips go to each part, which plans half as many scans.
EDGE_SPLIT_ROWS = 100


def _edge_halves(params: dict[str, Any], strips: int) -> list[dict[str, Any]] | None:
    """The params of a big box's edge query in two parts, each with every other fine row of
    every strip (a point is in one fine row, so in one part; within it, in the first strip that
    holds it), so that the two connections share each strip, the dense one included. Splitting
    by strips (two of the four in each part) left one connection with both heavy strips when
    they met: on 10M trips, the worst box read 68k points in one part and 2 in the other. A part
    left with no row is dropped. None (split by strips) when the strips have EDGE_SPLIT_ROWS
    fine rows or fewer, where planning each strip's scans once outweighs the balance, or when a
    strip of more than MAX_ROWS rows is read as a range."""
    names = tuple(f"s{k}rows" for k in range(strips))
    if not all(n in params for n in names) or sum(len(params[n]) for n in names) <= (
        EDGE_SPLIT_ROWS
    ):
        return None
    return _halves(params, names)


async def _one_end(
    conn: AsyncConnection,
    area: Area,
    side: str,
    g: float,
    params: dict[str, Any],
    copies: list[columns.Copy] | None = None,
    covers: pip.Covers | None = None,
) -> list[Part | CopyPart]:
    """The parts of a box's or a polygon's count by one end (side o or d); with the job tables'
    `copies`, their raw points from them (a polygon's cut fine cells only with `covers`, its
    ST_Covers in numpy)."""
    xn, yn, rn = END_COLUMNS[side]
    x, y = sql.Identifier(xn), sql.Identifier(yn)
    p = {**params, "side": side, "bside": side.upper(), "g": g}
    trips = _raw_table(copies)
    parts: list[Part | CopyPart] = []
    if isinstance(area, BBox):
        cells, strips = box_plan(area, g)
        p |= cells | {"minx": area.minx, "miny": area.miny, "maxx": area.maxx, "maxy": area.maxy}
        r = cell_range_bounds(cells, g)
        p |= r
        if copies is not None:
            edge = (area.minx, area.miny, area.maxx, area.maxy)
            f = columns.Filter.of(p)
            parts.append(CopyPart(lambda: columns.box_edge(copies, side, strips, edge, r, f)))
        scans = _strip_scans(x, y, sql.Identifier(rn), strips, p, trips=trips)
        halves = _edge_halves(p, len(strips))
        if halves is None:
            # the left and right strips (0, 1) are the tall ones: one of them, and one of the
            # others, in each part
            groups = [(group, p) for group in (scans[0::2], scans[1::2]) if group]
        else:
            groups = [(scans, h) for h in halves]
        parts += [
            Part(_BOX_EDGE.format(scans=sql.SQL(" UNION ALL ").join(group), in_box=_IN_BOX), h)
            for group, h in groups
        ]
        if cells["cx0"] <= cells["cx1"] and cells["cy0"] <= cells["cy1"]:
            parts.append(Part(_inner_query(cells, p), p))
        return parts
    minx, miny, maxx, maxy = area.bounds
    p |= {
        "bx0": math.floor(minx / g),
        "bx1": math.floor(maxx / g),
        "by0": math.floor(miny / g),
        "by1": math.floor(maxy / g),
    }
    bx0, bx1, by0, by1 = p["bx0"], p["bx1"], p["by0"], p["by1"]
    p |= {"qx0": bx0 // BLOCK, "qx1": bx1 // BLOCK, "qy0": by0 // BLOCK, "qy1": by1 // BLOCK}
    cur = await conn.execute(_SHAPE_BLOCKS, p)
    blocks = [(int(a), int(b)) for a, b in await cur.fetchall()]
    stored = _cells_of_blocks(blocks, bx0, bx1, by0, by1)
    plan = shape_plan(shapely.from_geojson(area.geojson), stored, g)
    if not plan.whole and not plan.probes:
        return parts
    # the probes' columns (cx, cy, fr, c0, c1, kind), each an array
    cx, cy, fr, c0, c1, kind = np.array(plan.probes, dtype=np.int64).reshape(-1, 6).T
    blocks, whole = _whole_blocks(plan.whole)
    p |= {
        "geojson": area.geojson,
        "wcx": [c[0] for c in whole],
        "wcy": [c[1] for c in whole],
        "wbx": [b[0] for b in blocks],
        "wby": [b[1] for b in blocks],
        "pfr": fr.tolist(),
        "pkind": kind.tolist(),
    }
    bounds = probe_bounds(cx, cy, c0, c1, g)
    tx, ty = sql.Identifier("t", xn), sql.Identifier("t", yn)

    def shape_query(table: sql.Identifier) -> sql.Composed:
        return _SHAPE_QUERY.format(
            cells=_whole_rows("wcx", "wcy", "side"),
            blocks=_whole_rows("wbx", "wby", "bside"),
            x=x,
            y=y,
            point=sql.SQL("ST_SetSRID(ST_MakePoint({}, {}), 4326)").format(tx, ty),
            row=sql.Identifier("t", rn),
            trips=table,
        )

    def probes(sel: np.ndarray) -> dict[str, list[Any]]:
        arrays = zip(("px0", "px1", "py0", "py1"), bounds, strict=True)
        return {"pfr": fr[sel].tolist(), "pkind": kind[sel].tolist()} | {
            k: v[sel].tolist() for k, v in arrays
        }

    every = np.ones(len(fr), dtype=bool)
    if copies is not None:
        # The job tables' points of the probes from the copies, and trips_p0's from PostgreSQL:
        # the runs of fine cells (kinds 1 / -1) and, when PostGIS's own test of the polygon can
        # be run on them (pip.Covers), the cut fine cells (kinds 2 / -2); else those from
        # PostgreSQL, every table.
        read = np.ones(len(fr), dtype=bool) if covers is not None else np.abs(kind) == 1
        if read.any():
            x0, x1, y0, y1 = (b[read] for b in bounds)
            sel = columns.Probes(fr[read], x0, x1, y0, y1, kind[read])
            f = columns.Filter.of(p)
            parts.append(CopyPart(lambda: columns.probe_points(copies, side, sel, f, covers)))
            small = p | probes(read) | {"wcx": [], "wcy": [], "wbx": [], "wby": []}
            parts.append(Part(shape_query(trips), small))
        every = ~read
    p |= probes(every)
    # the probes in two parts, the rollup's whole cells in the first, its whole blocks in the
    # second
    halves = _halves(p, ("pfr", "pkind", "px0", "px1", "py0", "py1"))
    if len(halves) == 2:
        halves[0] |= {"wbx": [], "wby": []}
        halves[1] |= {"wcx": [], "wcy": []}
    query = shape_query(sql.Identifier("trips"))
    return parts + [Part(query, h) for h in halves]


async def polygon_test(conn: AsyncConnection, geojson: str) -> pip.Covers | None:
    """ST_Covers of the polygon in numpy (pip.Covers), from the doubles PostGIS reads of it;
    None when that test cannot stand in for PostGIS's (another PostGIS version, or a polygon
    where its two variants differ)."""
    cur = await conn.execute(pip.WKB, {"geojson": geojson})
    row = await cur.fetchone()
    if row is None or row[0] is None or not pip.supported(row[1]):
        return None
    return pip.Covers.of(bytes(row[0]))


def _whole_blocks(
    whole: list[tuple[int, int]],
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(blocks, cells): the blocks (db/migrations/021) all of whose cells are among the cells
    `whole`, and the cells of `whole` outside them. A block's rollup rows are its cells' sums, so
    the two read the same trips as the cells, from up to 25 times fewer rows (the biggest
    benchmark polygon on 10M trips: 598 whole cells, ~31k rollup rows)."""
    cells = set(whole)
    per_block = Counter((x // BLOCK, y // BLOCK) for x, y in cells)
    full = {b for b, n in per_block.items() if n == BLOCK * BLOCK}
    rest = sorted(c for c in cells if (c[0] // BLOCK, c[1] // BLOCK) not in full)
    return sorted(full), rest


def _dest(test: str, inside: bool, **names: sql.Composable) -> sql.Composable:
    """The destination test, or its negation."""
    composed = sql.SQL(test).format(**names)
    return composed if inside else sql.SQL("NOT ({})").format(composed)


def _both(
    area: Area,
    params: dict[str, Any],
    dest_inside: bool = True,
    copies: list[columns.Copy] | None = None,
    covers: pip.Covers | None = None,
) -> list[Part | CopyPart]:
    """The trips whose origin is in the area and whose destination is (dest_inside) or is not;
    those of the job tables from their `copies` when given: a box's (columns.both_box), and a
    polygon's read by its fine cells when PostGIS's test of it runs in numpy (`covers`;
    columns.both_shape)."""
    minx, miny, maxx, maxy = (
        (area.minx, area.miny, area.maxx, area.maxy) if isinstance(area, BBox) else area.bounds
    )
    p = {**params, "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy}
    if isinstance(area, BBox):
        query = _BOTH_BOX.format(
            rows=rows_condition(sql.Identifier("ofr"), miny, maxy, "rows", p),
            dest=_dest(_DEST_IN_BOX, dest_inside),
            trips=_raw_table(copies),
        )
        if copies is not None:
            box, f = (minx, miny, maxx, maxy), columns.Filter.of(p)
            return [
                CopyPart(lambda: columns.both_box(copies, box, dest_inside, f)),
                Part(query, p),
            ]
        return [Part(query, h) for h in _halves(p, ("rows",))] if "rows" in p else [Part(query, p)]
    # a polygon's bounds, widened by EPS: a prefilter; its fine cells or ST_Covers decide
    p |= {"minx": minx - EPS, "miny": miny - EPS, "maxx": maxx + EPS, "maxy": maxy + EPS}
    p["geojson"] = area.geojson
    fine = fine_cells(shapely.from_geojson(area.geojson))
    if fine is None:
        rows = rows_condition(sql.Identifier("t", "ofr"), p["miny"], p["maxy"], "rows", p)
        dest = _dest(_DEST_IN_SHAPE, dest_inside)
        return [Part(_BOTH_SHAPE.format(rows=rows, dest=dest), p)]
    if not fine.rows:
        return []
    p |= {"classes": fine.classes, "kx0": fine.kx0, "ky0": fine.ky0, "kh": fine.kh}
    p |= {"prow": fine.rows, "px0": fine.x0, "px1": fine.x1, "pia": fine.ia, "pib": fine.ib}
    t = {c: sql.Identifier("t", c) for c in ("ox", "oy", "dx", "dy")}
    oclass = sql.SQL(_CLASS).format(x=t["ox"], y=t["oy"])
    dclass = sql.SQL(_CLASS).format(x=t["dx"], y=t["dy"])
    dest = _dest(_DEST_IN_FINE, dest_inside, dclass=dclass)

    def fine_query(table: sql.Identifier) -> sql.Composed:
        return _BOTH_FINE.format(
            orow=sql.Identifier("t", "ofr"), oclass=oclass, dest=dest, trips=table
        )

    if copies is not None and covers is not None:
        cells = np.frombuffer(fine.classes, dtype=np.uint8).reshape(-1, fine.kh)
        bounds = (p["minx"], p["miny"], p["maxx"], p["maxy"])
        spans = (np.asarray(v, dtype=np.float64) for v in (fine.x0, fine.x1, fine.ia, fine.ib))
        fine_rows = np.asarray(fine.rows)
        on = columns.Fine(_KEY_STEP, fine.kx0, fine.ky0, cells, bounds, fine_rows, *spans)
        f = columns.Filter.of(p)
        return [
            CopyPart(lambda: columns.both_shape(copies, on, covers, dest_inside, f)),
            Part(fine_query(sql.Identifier("trips_p0")), p),
        ]
    table = sql.Identifier("trips")
    halves = _halves(p, ("prow", "px0", "px1", "pia", "pib"))
    return [Part(fine_query(table), h) for h in halves]


# A box's `both` and `either` from the pair rollup (db/migrations/022, 023), with R the pair
# blocks box_plan takes for the box on the pair grid and E its strips (where the box and R
# disagree):
#   both   = pairs(R x R) + sum over the trips with an end in E of f(AND),
#   either = p(R) + q(R) - pairs(R x R) + sum over the trips with an end in E of f(OR),
#   f(op) = [origin in box op destination in box] - [origin block in R op destination block in R]
# (p, q: the trips by the block of their origin, of their destination), since f = 0 for a trip
# with neither end in E. The trips with their origin in E are read through the origin index
# (which carries the destination), those with their destination in E and their origin in no
# strip through the destination index (which carries the origin).
_PAIR_EDGE = sql.SQL("""
    SELECT started_at::date, sum(f)::bigint FROM (
        SELECT started_at,
               (ox BETWEEN %(minx)s AND %(maxx)s AND oy BETWEEN %(miny)s AND %(maxy)s
                {op} dx BETWEEN %(minx)s AND %(maxx)s AND dy BETWEEN %(miny)s AND %(maxy)s)::int
             - (ox >= %(tx0)s AND ox < %(tx1)s AND oy >= %(ty0)s AND oy < %(ty1)s
                {op} dx >= %(tx0)s AND dx < %(tx1)s AND dy >= %(ty0)s AND dy < %(ty1)s)::int AS f
        FROM ({scans}) s) e
    WHERE f <> 0
    GROUP BY 1""")

# p(R) + q(R): the trips by the block of their origin (side p) and of their destination (q).
_PAIR_ENDS = sql.SQL("""
    SELECT week, sum(trips)::bigint FROM weekly_cell_trips
    WHERE side IN ('p', 'q') AND cx BETWEEN %(cx0)s AND %(cx1)s AND cy BETWEEN %(cy0)s AND %(cy1)s
      AND week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY week""")

# The pair rows of R x R: one descent per origin block of R (cx = its code), each reading the
# codes of R's columns of destination blocks, tested exactly by their decoded block (rollups.
# pair_code).
_PAIR_ROWS_QUERY = sql.SQL("""
    SELECT week, sum(trips)::bigint FROM weekly_cell_trips
    WHERE side = 'P' AND {origins} AND {destinations}
      AND week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY week""")
# Beyond this many origin blocks, R's origins are read as a range of codes (tested like the
# destinations) rather than one descent each.
MAX_PAIR_DESCENTS = 4096
# The pairs answer a box when its strips on the pair grid cover less than this share of its
# area: else the trips with an end in them are about as many as those with their origin in the
# box, and one scan of those (_both) is cheaper than two (on 10M trips, a 0.16-degree box whose
# strips were 0.48 of it: 190 ms against 370 with the pairs).
PAIR_EDGE_SHARE = 0.4


def _codes_in_r(column: str) -> sql.Composed:
    """The pair code in `column` in R's range of codes and its decoded block in R."""
    return sql.SQL(
        "{c} BETWEEN %(code0)s AND %(code1)s AND ({c} >> %(shift)s) BETWEEN %(cx0)s AND %(cx1)s"
        " AND ({c} & %(mask)s) - %(half)s BETWEEN %(cy0)s AND %(cy1)s"
    ).format(c=sql.Identifier(column))


def _both_pairs(
    box: BBox,
    params: dict[str, Any],
    either: bool = False,
    copies: list[columns.Copy] | None = None,
) -> list[Part | CopyPart] | None:
    """A box's `both` (or `either`) from the pair rollup (see _PAIR_EDGE), or None when R is
    empty or the strips are too big a share of the box (PAIR_EDGE_SHARE). With `copies`, the
    trips of the job tables with an end in the strips come from them (columns.pair_edge)."""
    blocks, strips = box_plan(box, PAIR_GRID)
    cx0, cx1, cy0, cy1 = blocks["cx0"], blocks["cx1"], blocks["cy0"], blocks["cy1"]
    if cx0 > cx1 or cy0 > cy1:
        return None
    area = (box.maxx - box.minx) * (box.maxy - box.miny)
    edge = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in strips)
    if edge >= PAIR_EDGE_SHARE * area:
        return None
    r = cell_range_bounds(blocks, PAIR_GRID)
    p = {**params, **blocks, **r}
    p |= {"minx": box.minx, "miny": box.miny, "maxx": box.maxx, "maxy": box.maxy}
    p |= {"shift": PAIR_SHIFT, "mask": PAIR_ROWS - 1, "half": PAIR_HALF}
    p |= {"code0": pair_code(cx0, cy0), "code1": pair_code(cx1, cy1)}
    if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) <= MAX_PAIR_DESCENTS:
        p["codes"] = [pair_code(a, b) for a in range(cx0, cx1 + 1) for b in range(cy0, cy1 + 1)]
        origins: sql.Composable = sql.SQL("cx = ANY(%(codes)s::int[])")
    else:
        origins = _codes_in_r("cx")
    ends = {c: sql.Identifier(c) for c in ("ox", "oy", "dx", "dy", "ofr", "dfr")}
    select = sql.SQL("started_at, ox, oy, dx, dy")
    trips = _raw_table(copies)
    by_origin = _strip_scans(ends["ox"], ends["oy"], ends["ofr"], strips, p, select, trips=trips)
    origin_in_none = sql.SQL(" AND NOT ({})").format(
        sql.SQL(" OR ").join(_in_strip(ends["ox"], ends["oy"], k) for k in range(len(strips)))
    )
    by_destination = _strip_scans(
        ends["dx"], ends["dy"], ends["dfr"], strips, p, select, origin_in_none, trips
    )
    # the two scans first, one per connection; then the pair rows, halved when read by descents
    op = sql.SQL("OR" if either else "AND")
    pair_rows = _PAIR_ROWS_QUERY.format(origins=origins, destinations=_codes_in_r("cy"))
    sign = -1 if either else 1
    copy_parts: list[Part | CopyPart] = []
    if copies is not None:
        rect = (box.minx, box.miny, box.maxx, box.maxy)
        f = columns.Filter.of(p)
        copy_parts.append(CopyPart(lambda: columns.pair_edge(copies, strips, rect, r, either, f)))
    parts = copy_parts + [
        Part(_PAIR_EDGE.format(op=op, scans=sql.SQL(" UNION ALL ").join(by_origin)), p),
        Part(_PAIR_EDGE.format(op=op, scans=sql.SQL(" UNION ALL ").join(by_destination)), p),
        *(Part(pair_rows, h, sign) for h in (_halves(p, ("codes",)) if "codes" in p else [p])),
    ]
    return parts + [Part(_PAIR_ENDS, p)] if either else parts


async def weekly_counts(
    conn: AsyncConnection,
    *,
    regions: list[int] | None,
    area: Area | None,
    match: str,
    w0: date,
    w1: date,
    spare: Spare | None = None,
) -> Counter[date]:
    """Trips per week (Monday) of the window, for the area and match, read in one snapshot (on
    `conn`, and on a `spare` connection for the parts of a big area, see run_parts) that is one
    state of the store (_consistent)."""

    spare = spare if _idle(conn) else None  # a spare connection only in a read of our own
    params: dict[str, Any] = {"regions": regions, "w0": w0, "w1": w1}

    async def read(c: AsyncConnection, ident: columns.Identity | None) -> Counter[date]:
        return await _counts(c, area, match, params, spare, ident)

    return await _consistent(conn, read, raw=area is not None, serial=_serial(match))


def _serial(match: str) -> bool:
    return match in ("both", "either")


async def _counts(
    conn: AsyncConnection,
    area: Area | None,
    match: str,
    params: dict[str, Any],
    spare: Spare | None,
    ident: columns.Identity | None = None,
) -> Counter[date]:
    """The parts of the area and match, summed, inside the read _consistent began on `conn`;
    with the job tables' columnar copies when the store (columns.STORE) has one for each job
    table of the snapshot (`ident`)."""
    store = columns.STORE
    copies = store.copies(ident) if store is not None and area is not None else None
    parts = await _parts(conn, area, match, params, copies)
    return await run_parts(conn, parts, spare, _serial(match))


def _idle(conn: AsyncConnection) -> bool:
    return conn.info.transaction_status == TransactionStatus.IDLE


async def _parts(
    conn: AsyncConnection,
    area: Area | None,
    match: str,
    params: dict[str, Any],
    copies: list[columns.Copy] | None = None,
) -> list[Part | CopyPart]:
    """The parts of a read; `copies` (the columnar copies of every job table of the snapshot, or
    None) take the job tables' raw points of the reads they have a twin for: a box's edges, a
    polygon's probes (origin, destination), a box's pair strips and both scans, and a polygon's
    both scan (both, either)."""
    if area is None:
        return [Part(_REGION_ROLLUP, params)]
    g = await grid_cell(conn)
    # a polygon's ST_Covers in numpy, for the copies' points of its cut fine cells
    covers = None
    if isinstance(area, Shape) and copies is not None:
        covers = await polygon_test(conn, area.geojson)
    if match in ("origin", "destination"):
        return await _one_end(conn, area, match[0], g, params, copies, covers)
    pairs = _both_pairs(area, params, match == "either", copies) if isinstance(area, BBox) else None
    if pairs is not None:
        return pairs
    if match == "both":
        return _both(area, params, copies=copies, covers=covers)
    # either = destination + (origin in, destination not); the scan, the biggest, first
    return [
        *_both(area, params, dest_inside=False, copies=copies, covers=covers),
        *await _one_end(conn, area, "d", g, params, copies, covers),
    ]


async def weekly_average(
    conn: AsyncConnection,
    *,
    region: str | None,
    area: Area | None,
    start: date | None,
    end: date | None,
    match: str,
    spare: Spare | None = None,
) -> dict[str, Any]:
    """The answer of GET/POST /stats/weekly-average (SPEC section 4); `spare` as in run_parts.
    The region's ids, the window and the counts are read in one snapshot (_consistent): the
    default window is the stored trips' of the same state of the store as the counts."""
    if region is None and area is None:
        raise AreaError("give a region, a bbox or a polygon (or a region with one of them)")
    spare = spare if _idle(conn) else None

    async def read(
        c: AsyncConnection, ident: columns.Identity | None
    ) -> tuple[tuple[date, date] | None, Counter[date]]:
        regions = await region_ids(c, region)
        window = await _window(c, start, end)
        if window is None:
            return None, Counter()
        params = {"regions": regions, "w0": window[0], "w1": window[1]}
        return window, await _counts(c, area, match, params, spare, ident)

    window, counts = await _consistent(conn, read, raw=area is not None, serial=_serial(match))
    if window is None:
        return {
            "weekly_average": 0.0,
            "trips": 0,
            "weeks": 0,
            "from": None,
            "to": None,
            "match": match,
            "series": [],
        }
    w0, w1 = window
    weeks = (w1 - w0).days // 7 + 1
    series = [
        {"week": (w := w0 + timedelta(days=7 * i)).isoformat(), "trips": counts.get(w, 0)}
        for i in range(weeks)
    ]
    total = sum(counts.get(w0 + timedelta(days=7 * i), 0) for i in range(weeks))
    return {
        "weekly_average": total / weeks,
        "trips": total,
        "weeks": weeks,
        "from": w0.isoformat(),
        "to": w1.isoformat(),
        "match": match,
        "series": series,
    }


__all__ = [
    "weekly_average",
    "weekly_counts",
    "run_parts",
    "Spare",
    "UnknownRegion",
    "AreaError",
    "Shape",
    "BBox",
    "box_plan",
]
