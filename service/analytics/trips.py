"""Trips as GeoJSON LineStrings (origin → destination), filtered and keyset-paged by id."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from service.analytics.area import BBox

MAX_LIMIT = 5000

_QUERY = sql.SQL("""
    WITH hit AS ({ids} ORDER BY id LIMIT %(limit)s)
    SELECT t.id, r.name AS region, d.name AS datasource, t.started_at,
           ST_X(t.origin) AS ox, ST_Y(t.origin) AS oy,
           ST_X(t.destination) AS dx, ST_Y(t.destination) AS dy
    FROM hit
    JOIN trips t ON t.id = hit.id
    JOIN regions r ON r.id = t.region_id
    JOIN datasources d ON d.id = t.datasource_id
    ORDER BY t.id""")

_IDS = sql.SQL("""
    SELECT t.id FROM trips t
    WHERE t.id > %(after_id)s
      AND (%(regions)s::int[] IS NULL OR t.region_id = ANY(%(regions)s::int[]))
      AND (%(datasource)s::text IS NULL
           OR t.datasource_id IN (SELECT id FROM datasources WHERE name = %(datasource)s))
      AND (%(t0)s::timestamp IS NULL OR t.started_at >= %(t0)s::timestamp)
      AND (%(t1)s::timestamp IS NULL OR t.started_at < %(t1)s::timestamp)
      AND {area}""")


def _in_box(end: str) -> sql.Composed:
    """Exact and inclusive on the end's coordinates; `&&` lets the end's GiST index find them.

    The same test as the box's in trips_point_in_area_sql() (`point <@ box`), kept in this form
    for the planner's estimate, on which this page's plan turns: swapped, one limit got faster
    and the other far slower (docs/performance.md, "Experiments that did not ship")."""
    col = sql.Identifier("t", end)
    return sql.SQL(
        "({c} && ST_MakeEnvelope(%(minx)s, %(miny)s, %(maxx)s, %(maxy)s, 4326)"
        " AND ST_X({c}) BETWEEN %(minx)s AND %(maxx)s AND ST_Y({c}) BETWEEN %(miny)s AND %(maxy)s)"
    ).format(c=col)


def ids_query(bbox: BBox | None, match: str) -> sql.Composable:
    """The query of the ids of the trips of the area and match (in no order)."""
    if bbox is None:
        return _IDS.format(area=sql.SQL("true"))
    o, d = _in_box("origin"), _in_box("destination")
    if match == "either":  # two index scans, each ordered and limited, then merged
        return sql.SQL(
            "SELECT id FROM (({} ORDER BY id LIMIT %(limit)s)"
            " UNION ({} ORDER BY id LIMIT %(limit)s)) u"
        ).format(_IDS.format(area=o), _IDS.format(area=d))
    if match == "origin":
        return _IDS.format(area=o)
    if match == "destination":
        return _IDS.format(area=d)
    if match == "both":
        return _IDS.format(area=sql.SQL("({} AND {})").format(o, d))
    raise ValueError(f"unknown match {match!r}")


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
        await cur.execute(_QUERY.format(ids=ids_query(bbox, match)), p, prepare=False)
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
