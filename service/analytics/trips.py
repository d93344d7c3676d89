"""Trips as GeoJSON LineStrings (origin → destination), filtered and keyset-paged by id."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from service.analytics.area import BBox
from service.analytics.weekly import rows_condition

MAX_LIMIT = 5000

_QUERY = sql.SQL("""
    SELECT t.id, r.name AS region, d.name AS datasource, t.started_at,
           t.ox, t.oy, t.dx, t.dy
    FROM trips t
    JOIN regions r ON r.id = t.region_id
    JOIN datasources d ON d.id = t.datasource_id
    WHERE t.id > %(after_id)s
      AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
      AND (%(datasource)s::text IS NULL OR d.name = %(datasource)s)
      AND (%(t0)s::timestamp IS NULL OR t.started_at >= %(t0)s::timestamp)
      AND (%(t1)s::timestamp IS NULL OR t.started_at < %(t1)s::timestamp)
      AND {area}
    ORDER BY t.id
    LIMIT %(limit)s""")


def _in_box(x: str, y: str, params: dict[str, Any]) -> sql.Composed:
    """Exact, inclusive, on the plain coordinates; the fine rows of the box (weekly.ROW) let
    the end's (row, x) index find them."""
    rows = rows_condition(
        sql.Identifier("t", y), params["miny"], params["maxy"], f"{y}_rows", params
    )
    return sql.SQL(
        "({rows} AND {x} BETWEEN %(minx)s AND %(maxx)s AND {y} BETWEEN %(miny)s AND %(maxy)s)"
    ).format(rows=rows, x=sql.Identifier("t", x), y=sql.Identifier("t", y))


def area_condition(bbox: BBox | None, match: str, params: dict[str, Any]) -> sql.Composable:
    if bbox is None:
        return sql.SQL("true")
    o, d = _in_box("ox", "oy", params), _in_box("dx", "dy", params)
    return {
        "origin": o,
        "destination": d,
        "both": sql.SQL("({} AND {})").format(o, d),
        "either": sql.SQL("({} OR {})").format(o, d),
    }[match]


async def trips(
    conn: AsyncConnection,
    *,
    regions: list[int] | None,
    datasource: str | None,
    bbox: BBox | None,
    match: str,
    start: date | None,
    end: date | None,
    limit: int,
    after_id: int,
) -> dict[str, Any]:
    """A FeatureCollection of up to `limit` trips with id > after_id, and `next_after_id`."""
    limit = min(limit, MAX_LIMIT)
    p: dict[str, Any] = {
        "after_id": after_id,
        "regions": regions,
        "datasource": datasource,
        "limit": limit,
        "t0": start,
        "t1": end + timedelta(days=1) if end else None,
    }
    if bbox:
        p |= {
            "minx": bbox.minx,
            "miny": bbox.miny,
            "maxx": bbox.maxx,
            "maxy": bbox.maxy,
        }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_QUERY.format(area=area_condition(bbox, match, p)), p)
        rows = await cur.fetchall()
    features = [
        {
            "type": "Feature",
            "id": r["id"],
            "geometry": {
                "type": "LineString",
                "coordinates": [[r["ox"], r["oy"]], [r["dx"], r["dy"]]],
            },
            "properties": {
                "id": r["id"],
                "region": r["region"],
                "datasource": r["datasource"],
                "datetime": r["started_at"].isoformat(),
            },
        }
        for r in rows
    ]
    next_after = rows[-1]["id"] if len(rows) == limit else None
    return {"type": "FeatureCollection", "features": features, "next_after_id": next_after}
