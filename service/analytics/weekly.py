"""Exact weekly averages for a region, a box or a polygon (SPEC section 2), fast at any size.

The rollup `weekly_cell_trips` counts trips per week, grid cell (floor(coordinate / cell)) and
end of the trip. An area is answered from the rollup's cells and corrected with the raw points
(through GiST) only where the two disagree:
- a box: the cells taken are those it covers more than half of on each axis; the raw points read
  are those of the box outside the taken cells (added) and those of the taken cells outside the
  box (taken off), never more than half a cell deep (box_plan);
- a polygon: cells it covers are taken whole; a cell cut by its edge is split into sub-cells,
  classed inside / outside / cut, and counted from its inside sub-cells' points plus the covered
  points of its cut ones, or as its rollup total minus its outside sub-cells' points and the
  uncovered points of its cut ones, whichever reads fewer points (shape_plan).
`&&` compares single-precision boxes, so it is only a pre-filter: the exact test is plain
coordinate comparisons for a box and ST_Covers for a polygon (boundaries inclusive). `both`
needs both ends of a trip, which no single-end rollup holds: it is counted from the raw points,
and `either` = origin + destination - both.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import shapely
from psycopg import AsyncConnection, sql

from service.analytics.area import Area, AreaError, BBox, Shape

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


def _end_column(side: str) -> sql.Identifier:
    return sql.Identifier({"o": "origin", "d": "destination"}[side])


_REGION_ROLLUP = sql.SQL("""
    SELECT week, sum(trips)::bigint FROM weekly_trips
    WHERE week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY week""")

_BOX_INNER = sql.SQL("""
    SELECT week, sum(trips)::bigint FROM weekly_cell_trips
    WHERE side = %(side)s AND cx BETWEEN %(cx0)s AND %(cx1)s AND cy BETWEEN %(cy0)s AND %(cy1)s
      AND week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY week""")

# The raw points where the box and the rollup's cell rectangle R disagree: +1 for a point of the
# box whose cell is outside R, -1 for a point of R's cells outside the box (see box_plan).
_BOX_EDGE = sql.SQL("""
    SELECT date_trunc('week', started_at)::date,
           sum(CASE WHEN {in_box} THEN 1 ELSE -1 END)::bigint FROM trips
    WHERE ({prefilter})
      AND ({in_box}) IS DISTINCT FROM
          (floor(ST_X({col}) / %(g)s)::int BETWEEN %(cx0)s AND %(cx1)s
           AND floor(ST_Y({col}) / %(g)s)::int BETWEEN %(cy0)s AND %(cy1)s)
      AND started_at >= %(w0)s::timestamp AND started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")

_IN_BOX = sql.SQL(
    "ST_X({col}) BETWEEN %(minx)s AND %(maxx)s AND ST_Y({col}) BETWEEN %(miny)s AND %(maxy)s"
)

# The cells of the rollup that hold trips of the window near a polygon.
_SHAPE_CELLS = sql.SQL("""
    SELECT cx, cy, sum(trips) FROM weekly_cell_trips
    WHERE side = %(side)s AND cx BETWEEN %(bx0)s AND %(bx1)s AND cy BETWEEN %(by0)s AND %(by1)s
      AND week BETWEEN %(w0)s AND %(w1)s
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY cx, cy""")

# Rollup totals of the cells counted whole, plus the raw points of the probes (shape_plan): a run
# of sub-cells of one cell, read through GiST, each point counted by the probe's kind.
_SHAPE_QUERY = sql.SQL("""
    WITH area AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s), 4326) AS geom),
    probe AS (
        SELECT p.*, %(g)s / p.sub AS s,
               ST_MakeEnvelope(p.cx * %(g)s + p.i0 * (%(g)s / p.sub) - %(eps)s,
                               p.cy * %(g)s + p.j * (%(g)s / p.sub) - %(eps)s,
                               p.cx * %(g)s + (p.i1 + 1) * (%(g)s / p.sub) + %(eps)s,
                               p.cy * %(g)s + (p.j + 1) * (%(g)s / p.sub) + %(eps)s, 4326) AS env
        FROM unnest(%(pcx)s::int[], %(pcy)s::int[], %(psub)s::int[], %(pj)s::int[],
                    %(pi0)s::int[], %(pi1)s::int[], %(pkind)s::int[])
             AS p(cx, cy, sub, j, i0, i1, kind)
    )
    SELECT week, sum(n)::bigint FROM (
        SELECT w.week, w.trips AS n
        FROM unnest(%(wcx)s::int[], %(wcy)s::int[]) AS c(cx, cy)
        JOIN weekly_cell_trips w ON w.side = %(side)s AND w.cx = c.cx AND w.cy = c.cy
        WHERE w.week BETWEEN %(w0)s AND %(w1)s
          AND (%(regions)s::int[] IS NULL OR w.region_id = ANY(%(regions)s::int[]))
        UNION ALL
        SELECT date_trunc('week', t.started_at)::date,
               CASE p.kind WHEN 1 THEN 1 WHEN -1 THEN -1
                           WHEN 2 THEN CASE WHEN ST_Covers(area.geom, t.{col}) THEN 1 ELSE 0 END
                           ELSE CASE WHEN ST_Covers(area.geom, t.{col}) THEN 0 ELSE -1 END END
        FROM probe p JOIN trips t ON t.{col} && p.env CROSS JOIN area
        WHERE floor(ST_X(t.{col}) / %(g)s)::int = p.cx AND floor(ST_Y(t.{col}) / %(g)s)::int = p.cy
          AND least(p.sub - 1, greatest(0, floor((ST_Y(t.{col}) - p.cy * %(g)s) / p.s)::int)) = p.j
          AND least(p.sub - 1, greatest(0, floor((ST_X(t.{col}) - p.cx * %(g)s) / p.s)::int))
              BETWEEN p.i0 AND p.i1
          AND t.started_at >= %(w0)s::timestamp
          AND t.started_at < %(w1)s::timestamp + interval '7 days'
          AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
    ) parts
    GROUP BY week""")

_BOTH_BOX = sql.SQL("""
    SELECT date_trunc('week', started_at)::date, count(*) FROM trips
    WHERE origin && ST_MakeEnvelope(%(pminx)s, %(pminy)s, %(pmaxx)s, %(pmaxy)s, 4326)
      AND destination && ST_MakeEnvelope(%(pminx)s, %(pminy)s, %(pmaxx)s, %(pmaxy)s, 4326)
      AND ST_X(origin) BETWEEN %(minx)s AND %(maxx)s AND ST_Y(origin) BETWEEN %(miny)s AND %(maxy)s
      AND ST_X(destination) BETWEEN %(minx)s AND %(maxx)s
      AND ST_Y(destination) BETWEEN %(miny)s AND %(maxy)s
      AND started_at >= %(w0)s::timestamp AND started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")

_BOTH_SHAPE = sql.SQL("""
    WITH area AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s), 4326) AS geom)
    SELECT date_trunc('week', t.started_at)::date, count(*) FROM trips t CROSS JOIN area
    WHERE t.origin && area.geom AND t.destination && area.geom
      AND ST_Covers(area.geom, t.origin) AND ST_Covers(area.geom, t.destination)
      AND t.started_at >= %(w0)s::timestamp
      AND t.started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")


def _envelope(minx: float, miny: float, maxx: float, maxy: float) -> sql.Composed:
    return sql.SQL("ST_MakeEnvelope({}, {}, {}, {}, 4326)").format(
        sql.Literal(minx), sql.Literal(miny), sql.Literal(maxx), sql.Literal(maxy)
    )


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


# Sub-cells per side of a cell cut by a polygon's edge (see shape_plan): finer in cells holding
# many trips of the window, where a point read costs more than a probe (measured at 10M trips).
SUB, DENSE_SUB, DENSE_TRIPS = 8, 16, 2000


@dataclass
class ShapePlan:
    """Cells counted whole from the rollup, and probes of raw points: (cx, cy, sub, j, i0, i1,
    kind) = the sub-cells i0..i1 of sub-row j of cell (cx, cy) split sub x sub; kind 1 counts
    each point, -1 takes each point off, 2 counts the points the polygon covers, -2 takes off
    those it does not."""

    whole: list[tuple[int, int]] = field(default_factory=list)
    probes: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)


def _runs(flags: np.ndarray) -> list[tuple[int, int, int]]:
    """(j, i0, i1) runs of True in a grid indexed [j, i], row by row."""
    edges = np.diff(np.pad(flags, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)  # row-major: a row's starts and ends pair in order
    _, ends = np.nonzero(edges == -1)
    return list(zip(rows.tolist(), starts.tolist(), (ends - 1).tolist(), strict=True))


def shape_plan(
    geom: Any,
    cells: list[tuple[int, int, int]],
    g: float,
    sub: int = SUB,
    dense_sub: int = DENSE_SUB,
    dense_trips: int = DENSE_TRIPS,
) -> ShapePlan:
    """How to count a polygon's points exactly over the rollup cells `cells` (cx, cy, trips).

    A cell whose box (widened by EPS) the polygon covers is counted whole from the rollup; one it
    does not touch is skipped. A cell cut by the edge is split into sub x sub sub-cells, classed
    the same way (inside, outside, cut). Its count is either the points of its inside sub-cells
    plus the covered points of its cut ones, or, when the outside is the smaller part, the
    rollup's total minus the points of its outside sub-cells and the uncovered points of its cut
    ones: only the points of the cut sub-cells meet ST_Covers, and at most half of the rest are
    read. Classing a box widened by EPS is exact for every point of the box: a point more than
    EPS inside (outside) the polygon is covered (not covered) whatever the predicate's rounding.
    """
    plan = ShapePlan()
    if not cells:
        return plan
    shapely.prepare(geom)
    cx, cy, n = (np.array([c[k] for c in cells], dtype=np.int64) for k in range(3))
    boxes = shapely.box(cx * g - EPS, cy * g - EPS, (cx + 1) * g + EPS, (cy + 1) * g + EPS)
    whole = shapely.covers(geom, boxes)
    touches = shapely.intersects(geom, boxes)
    plan.whole = [(int(a), int(b)) for a, b in zip(cx[whole], cy[whole], strict=True)]
    partial = touches & ~whole
    for k, pick in ((sub, partial & (n < dense_trips)), (dense_sub, partial & (n >= dense_trips))):
        if pick.any():
            _split(geom, cx[pick], cy[pick], g, k, plan)
    return plan


def _split(geom: Any, cx: np.ndarray, cy: np.ndarray, g: float, k: int, plan: ShapePlan) -> None:
    s = g / k
    jj, ii = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")  # [j, i]
    x0 = cx[:, None, None] * g + ii[None] * s
    y0 = cy[:, None, None] * g + jj[None] * s
    subs = shapely.box(x0 - EPS, y0 - EPS, x0 + s + EPS, y0 + s + EPS)
    inside = shapely.covers(geom, subs)
    outside = ~shapely.intersects(geom, subs)
    cut = ~inside & ~outside
    for m, (a, b) in enumerate(zip(cx.tolist(), cy.tolist(), strict=True)):
        if outside[m].sum() < inside[m].sum():  # the complement: total - outside - uncovered
            plan.whole.append((a, b))
            runs = [(-1, r) for r in _runs(outside[m])] + [(-2, r) for r in _runs(cut[m])]
        else:
            runs = [(1, r) for r in _runs(inside[m])] + [(2, r) for r in _runs(cut[m])]
        plan.probes += [(a, b, k, j, i0, i1, kind) for kind, (j, i0, i1) in runs]


async def _rows(
    conn: AsyncConnection, query: sql.Composable, params: dict[str, Any]
) -> Counter[date]:
    cur = await conn.execute(query, params)  # type: ignore[call-overload]
    return Counter({week: int(n) for week, n in await cur.fetchall()})


async def _one_end(
    conn: AsyncConnection, area: Area, side: str, g: float, params: dict[str, Any]
) -> Counter[date]:
    col = _end_column(side)
    p = {**params, "side": side, "g": g}
    if isinstance(area, BBox):
        cells, strips = box_plan(area, g)
        p |= cells | {"minx": area.minx, "miny": area.miny, "maxx": area.maxx, "maxy": area.maxy}
        prefilter = sql.SQL(" OR ").join(
            sql.SQL("{} && {}").format(col, _envelope(*s)) for s in strips
        )
        in_box = _IN_BOX.format(col=col)
        query = _BOX_EDGE.format(prefilter=prefilter, col=col, in_box=in_box)
        counts = await _rows(conn, query, p)
        if cells["cx0"] <= cells["cx1"] and cells["cy0"] <= cells["cy1"]:
            counts.update(await _rows(conn, _BOX_INNER, p))
        return counts
    minx, miny, maxx, maxy = area.bounds
    p |= {
        "bx0": math.floor(minx / g),
        "bx1": math.floor(maxx / g),
        "by0": math.floor(miny / g),
        "by1": math.floor(maxy / g),
    }
    cur = await conn.execute(_SHAPE_CELLS, p)
    stored = [(int(a), int(b), int(n)) for a, b, n in await cur.fetchall()]
    plan = shape_plan(shapely.from_geojson(area.geojson), stored, g)
    if not plan.whole and not plan.probes:
        return Counter()
    names = ("pcx", "pcy", "psub", "pj", "pi0", "pi1", "pkind")
    columns = list(zip(*plan.probes, strict=True)) if plan.probes else [()] * len(names)
    p |= {
        "geojson": area.geojson,
        "eps": EPS,
        "wcx": [c[0] for c in plan.whole],
        "wcy": [c[1] for c in plan.whole],
        **{k: list(v) for k, v in zip(names, columns, strict=True)},
    }
    return await _rows(conn, _SHAPE_QUERY.format(col=col), p)


async def _both(conn: AsyncConnection, area: Area, params: dict[str, Any]) -> Counter[date]:
    if isinstance(area, BBox):
        pad = EPS
        p = {
            **params,
            "minx": area.minx,
            "miny": area.miny,
            "maxx": area.maxx,
            "maxy": area.maxy,
            "pminx": area.minx - pad,
            "pminy": area.miny - pad,
            "pmaxx": area.maxx + pad,
            "pmaxy": area.maxy + pad,
        }
        return await _rows(conn, _BOTH_BOX, p)
    return await _rows(conn, _BOTH_SHAPE, {**params, "geojson": area.geojson})


async def weekly_counts(
    conn: AsyncConnection,
    *,
    regions: list[int] | None,
    area: Area | None,
    match: str,
    w0: date,
    w1: date,
) -> Counter[date]:
    """Trips per week (Monday) of the window, for the area and match."""
    params: dict[str, Any] = {"regions": regions, "w0": w0, "w1": w1}
    if area is None:
        return await _rows(conn, _REGION_ROLLUP, params)
    g = await grid_cell(conn)
    if match in ("origin", "destination"):
        return await _one_end(conn, area, match[0], g, params)
    both = await _both(conn, area, params)
    if match == "both":
        return both
    either = await _one_end(conn, area, "o", g, params)
    either.update(await _one_end(conn, area, "d", g, params))
    either.subtract(both)
    return either


async def weekly_average(
    conn: AsyncConnection,
    *,
    region: str | None,
    area: Area | None,
    start: date | None,
    end: date | None,
    match: str,
) -> dict[str, Any]:
    """The answer of GET/POST /stats/weekly-average (SPEC section 4)."""
    if region is None and area is None:
        raise AreaError("give a region, a bbox or a polygon (or a region with one of them)")
    regions = await region_ids(conn, region)
    window = await _window(conn, start, end)
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
    counts = await weekly_counts(conn, regions=regions, area=area, match=match, w0=w0, w1=w1)
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
    "UnknownRegion",
    "AreaError",
    "Shape",
    "BBox",
    "box_plan",
]
