"""Weekly averages for a region, a box or a polygon (SPEC section 2): a thin caller of the SQL
function ``trips_weekly`` (db/migrations/001_baseline.sql), which a psql user calls the same way.

The Python side validates the request, names an unknown region, and shapes the answer; the
window, the counts and the zeros of empty weeks all come from the one statement, so they are
one state of the store.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from service.analytics.area import Area, AreaError, BBox, Shape


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


_BOX = sql.SQL("ST_MakeEnvelope(%(minx)s, %(miny)s, %(maxx)s, %(maxy)s, 4326)")
_SHAPE = sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON(%(geojson)s::text), 4326)")
_QUERY = sql.SQL(
    "SELECT week, trips FROM trips_weekly({area}, %(match)s, %(from)s::date, %(to)s::date,"
    " %(region)s::text)"
)


def area_sql(area: Area | None, params: dict[str, Any]) -> sql.Composable:
    """The SQL expression of the area (a box as ST_MakeEnvelope makes it), its values bound."""
    if isinstance(area, BBox):
        params |= {"minx": area.minx, "miny": area.miny, "maxx": area.maxx, "maxy": area.maxy}
        return _BOX
    if isinstance(area, Shape):
        params["geojson"] = area.geojson
        return _SHAPE
    return sql.SQL("NULL::geometry")


async def weekly_series(
    conn: AsyncConnection,
    *,
    region: str | None,
    area: Area | None,
    start: date | None,
    end: date | None,
    match: str,
) -> list[tuple[date, int]]:
    """trips_weekly's rows: (Monday, trips) for every week of the window."""
    if region is None and area is None:
        raise AreaError("give a region, a bbox or a polygon (or a region with one of them)")
    if start is not None and end is not None and monday(start) > monday(end):
        raise AreaError(f"from ({start}) is after to ({end})")
    await region_ids(conn, region)
    params: dict[str, Any] = {"match": match, "from": start, "to": end, "region": region}
    query = _QUERY.format(area=area_sql(area, params))
    cur = await conn.execute(query, params)
    return [(w, int(n)) for w, n in await cur.fetchall()]


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
    rows = await weekly_series(conn, region=region, area=area, start=start, end=end, match=match)
    total = sum(n for _, n in rows)
    return {
        "weekly_average": total / len(rows) if rows else 0.0,
        "trips": total,
        "weeks": len(rows),
        "from": rows[0][0].isoformat() if rows else None,
        "to": rows[-1][0].isoformat() if rows else None,
        "match": match,
        "series": [{"week": w.isoformat(), "trips": n} for w, n in rows],
    }


__all__ = ["weekly_average", "weekly_series", "UnknownRegion", "AreaError", "Shape", "BBox"]
