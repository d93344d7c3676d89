"""Exact weekly averages for a region, a box or a polygon (SPEC section 2), fast at any size.

The rollup `weekly_cell_trips` counts trips per week, grid cell (floor(coordinate / cell)) and
end of the trip. Cells wholly inside the area are answered from it; only the trips in cells cut
by the area's edge are read from the raw points, through GiST. `&&` compares single-precision
boxes, so it is only a pre-filter: the exact test is plain coordinate comparisons for a box and
ST_Covers for a polygon (boundaries inclusive). `both` needs both ends of a trip, which no
single-end rollup holds: it is counted from the raw points, and `either` = origin +
destination - both.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta
from typing import Any

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

# The raw points of the box that lie outside its wholly-inside cells.
_BOX_EDGE = sql.SQL("""
    SELECT date_trunc('week', started_at)::date, count(*) FROM trips
    WHERE ({prefilter})
      AND ST_X({col}) BETWEEN %(minx)s AND %(maxx)s AND ST_Y({col}) BETWEEN %(miny)s AND %(maxy)s
      AND NOT (floor(ST_X({col}) / %(g)s)::int BETWEEN %(cx0)s AND %(cx1)s
               AND floor(ST_Y({col}) / %(g)s)::int BETWEEN %(cy0)s AND %(cy1)s)
      AND started_at >= %(w0)s::timestamp AND started_at < %(w1)s::timestamp + interval '7 days'
      AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    GROUP BY 1""")

_SHAPE_QUERY = sql.SQL("""
    WITH area AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s), 4326) AS geom),
    cells AS (
        SELECT DISTINCT cx, cy FROM weekly_cell_trips
        WHERE side = %(side)s AND cx BETWEEN %(bx0)s AND %(bx1)s AND cy BETWEEN %(by0)s AND %(by1)s
          AND week BETWEEN %(w0)s AND %(w1)s
          AND (%(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[]))
    ),
    classified AS (
        SELECT c.cx, c.cy, e.env, ST_Covers(area.geom, e.env) AS whole,
               ST_Intersects(area.geom, e.env) AS touches
        FROM cells c CROSS JOIN area
        CROSS JOIN LATERAL (SELECT ST_MakeEnvelope(c.cx * %(g)s - %(eps)s, c.cy * %(g)s - %(eps)s,
                                                   (c.cx + 1) * %(g)s + %(eps)s,
                                                   (c.cy + 1) * %(g)s + %(eps)s, 4326) AS env) e
    )
    SELECT week, sum(n)::bigint FROM (
        SELECT w.week, w.trips AS n
        FROM classified c JOIN weekly_cell_trips w ON w.cx = c.cx AND w.cy = c.cy
        WHERE c.whole AND w.side = %(side)s AND w.week BETWEEN %(w0)s AND %(w1)s
          AND (%(regions)s::int[] IS NULL OR w.region_id = ANY(%(regions)s::int[]))
        UNION ALL
        SELECT date_trunc('week', t.started_at)::date, 1
        FROM classified c JOIN trips t ON t.{col} && c.env CROSS JOIN area
        WHERE NOT c.whole AND c.touches AND ST_Covers(area.geom, t.{col})
          AND floor(ST_X(t.{col}) / %(g)s)::int = c.cx AND floor(ST_Y(t.{col}) / %(g)s)::int = c.cy
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


def box_plan(box: BBox, g: float) -> tuple[dict[str, Any], list[tuple[float, float, float, float]]]:
    """The wholly-inside cell range of a box and the strips that cover the rest of it.

    A cell cx holds the x with floor(x / g) = cx; division and floor are monotone, so every x of
    a cell in [floor(minx / g) + 1, floor(maxx / g) - 1] lies in [minx, maxx].
    """
    cx0, cx1 = math.floor(box.minx / g) + 1, math.floor(box.maxx / g) - 1
    cy0, cy1 = math.floor(box.miny / g) + 1, math.floor(box.maxy / g) - 1
    cells = {"cx0": cx0, "cx1": cx1, "cy0": cy0, "cy1": cy1}
    whole = (box.minx, box.miny, box.maxx, box.maxy)
    if cx0 > cx1 or cy0 > cy1:
        return cells, [whole]
    left, right = cx0 * g, (cx1 + 1) * g
    bottom, top = cy0 * g, (cy1 + 1) * g
    strips = [
        (box.minx, box.miny, left + EPS, box.maxy),
        (right - EPS, box.miny, box.maxx, box.maxy),
        (left - EPS, box.miny, right + EPS, bottom + EPS),
        (left - EPS, top - EPS, right + EPS, box.maxy),
    ]
    clipped = [
        (max(a, box.minx), max(b, box.miny), min(c, box.maxx), min(d, box.maxy))
        for a, b, c, d in strips
    ]
    return cells, [s for s in clipped if s[0] <= s[2] and s[1] <= s[3]]


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
        counts = await _rows(conn, _BOX_EDGE.format(prefilter=prefilter, col=col), p)
        if cells["cx0"] <= cells["cx1"] and cells["cy0"] <= cells["cy1"]:
            counts.update(await _rows(conn, _BOX_INNER, p))
        return counts
    minx, miny, maxx, maxy = area.bounds
    p |= {
        "geojson": area.geojson,
        "eps": EPS,
        "bx0": math.floor(minx / g),
        "bx1": math.floor(maxx / g),
        "by0": math.floor(miny / g),
        "by1": math.floor(maxy / g),
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
