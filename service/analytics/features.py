"""OGC API – Features reads: trips and clusters as GeoJSON features, keyset-paged, and extents.

A feature meets a bbox when its geometry does (OGC): `ST_Intersects(line, box)`, exactly,
also for a trip whose line crosses the box with both ends outside it. The ends' GiST index
finds the candidates: a line that meets the box has its origin within the box widened by the
line's own extent, so the box widened by the largest extent of any stored trip (the store's
`span`, kept by every ingestion in trip_extent) holds every candidate's origin. Short trips
(a city's) keep that widened box small; one continent-long trip makes it large, and the answer
is still exact, only slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from service.analytics import clusters as cluster_rows
from service.api.ogc_params import Box, Interval

TRIP_ID = r"[1-9][0-9]{0,18}"
CLUSTER_ID = r"-?[0-9]{1,10}(_-?[0-9]{1,10}){5}"
# Widening margin for the candidates' box: far above the rounding of the subtraction.
EPS = 1e-9

# The box as a geometry; a degenerate box (zero width or height) as the segment or point it is.
BOX = sql.SQL("""(CASE
    WHEN %(minx)s < %(maxx)s AND %(miny)s < %(maxy)s
        THEN ST_MakeEnvelope(%(minx)s, %(miny)s, %(maxx)s, %(maxy)s, 4326)
    WHEN %(minx)s = %(maxx)s AND %(miny)s = %(maxy)s
        THEN ST_SetSRID(ST_MakePoint(%(minx)s, %(miny)s), 4326)
    ELSE ST_SetSRID(ST_MakeLine(ST_MakePoint(%(minx)s, %(miny)s),
                                ST_MakePoint(%(maxx)s, %(maxy)s)), 4326) END)""")

# The store's extent, kept by every ingestion (trip_extent, db/migrations/001_baseline.sql).
SUMMARY = sql.SQL("""
    SELECT trips AS n, minx, miny, maxx, maxy, spanx, spany, t0, t1 FROM trip_extent""")

_TRIP_ROWS = """
    SELECT t.id, r.name AS region, d.name AS datasource, t.started_at,
           ST_X(t.origin) AS ox, ST_Y(t.origin) AS oy,
           ST_X(t.destination) AS dx, ST_Y(t.destination) AS dy
    FROM trips t
    JOIN regions r ON r.id = t.region_id
    JOIN datasources d ON d.id = t.datasource_id"""

TRIPS = sql.SQL(
    _TRIP_ROWS
    + """
    WHERE t.id > %(after)s
      AND (%(t0)s::timestamp IS NULL OR t.started_at >= %(t0)s::timestamp)
      AND (%(t1)s::timestamp IS NULL OR t.started_at < %(t1)s::timestamp)
      AND {area}
    ORDER BY t.id
    LIMIT %(limit)s"""
)

TRIP_AREA = sql.SQL("""t.origin && ST_MakeEnvelope(%(wminx)s, %(wminy)s, %(wmaxx)s, %(wmaxy)s, 4326)
      AND ST_Intersects(ST_MakeLine(t.origin, t.destination), {box})""").format(box=BOX)

TRIP = sql.SQL(_TRIP_ROWS + "\n    WHERE t.id = %(id)s")

# Clusters: the line from the mean origin to the mean destination (trip_clusters' `geom`).
CLUSTER_LINE = sql.SQL("c.geom")

CLUSTERS = sql.SQL("""
    SELECT c.region_id, r.name AS region, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, c.trips,
           c.sum_ox / c.trips AS ox, c.sum_oy / c.trips AS oy,
           c.sum_dx / c.trips AS dx, c.sum_dy / c.trips AS dy
    FROM trip_clusters c
    JOIN regions r ON r.id = c.region_id
    WHERE {after} AND {area}
    ORDER BY c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket
    LIMIT %(limit)s""")

CLUSTER_AREA = sql.SQL("({line} && {box} AND ST_Intersects({line}, {box}))").format(
    line=CLUSTER_LINE, box=BOX
)

CLUSTERS_EXTENT = sql.SQL("""
    SELECT min(least(sum_ox / trips, sum_dx / trips)) AS minx,
           min(least(sum_oy / trips, sum_dy / trips)) AS miny,
           max(greatest(sum_ox / trips, sum_dx / trips)) AS maxx,
           max(greatest(sum_oy / trips, sum_dy / trips)) AS maxy
    FROM trip_clusters""")


@dataclass
class Summary:
    """The store's extents and the longest extent of one trip (trip_extent)."""

    n: int
    bbox: tuple[float, float, float, float] | None
    span: tuple[float, float]
    interval: tuple[datetime, datetime] | None


class SummaryCache:
    """The store's summary: one row kept by every ingestion, read in the caller's snapshot."""

    async def get(self, conn: AsyncConnection) -> Summary:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SUMMARY)
            r = await cur.fetchone()
        assert r is not None
        empty = not r["n"]
        return Summary(
            n=r["n"],
            bbox=None if empty else (r["minx"], r["miny"], r["maxx"], r["maxy"]),
            span=(0.0, 0.0) if empty else (r["spanx"], r["spany"]),
            interval=None if empty else (r["t0"], r["t1"]),
        )


def _box_params(box: Box) -> dict[str, float]:
    return {"minx": box.minx, "miny": box.miny, "maxx": box.maxx, "maxy": box.maxy}


def trip_feature(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": r["id"],
        "geometry": {"type": "LineString", "coordinates": [[r["ox"], r["oy"]], [r["dx"], r["dy"]]]},
        "properties": {
            "region": r["region"],
            "datasource": r["datasource"],
            "datetime": r["started_at"].isoformat(),
        },
    }


async def trips(
    conn: AsyncConnection,
    cache: SummaryCache,
    box: Box | None,
    when: Interval | None,
    limit: int,
    after: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` trips by id after `after`, and whether more follow. One snapshot: the
    span read and the page agree (a trip committed in between cannot slip past the span)."""
    p: dict[str, Any] = {
        "after": after,
        "limit": limit + 1,
        "t0": when.start if when else None,
        "t1": when.end if when else None,
    }
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        area: sql.Composable = sql.SQL("true")
        if box is not None:
            summary = await cache.get(conn)
            sx, sy = summary.span
            sx, sy = sx * (1 + EPS) + EPS, sy * (1 + EPS) + EPS
            p |= _box_params(box)
            p |= {
                "wminx": box.minx - sx,
                "wminy": box.miny - sy,
                "wmaxx": box.maxx + sx,
                "wmaxy": box.maxy + sy,
            }
            area = TRIP_AREA
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(TRIPS.format(area=area), p, prepare=False)
            rows = await cur.fetchall()
    return [trip_feature(r) for r in rows[:limit]], len(rows) > limit


async def trip(conn: AsyncConnection, trip_id: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(TRIP, {"id": trip_id})
        r = await cur.fetchone()
    return trip_feature(r) if r else None


def cluster_id(r: dict[str, Any]) -> str:
    return "_".join(str(r[k]) for k in ("region_id", "ocx", "ocy", "dcx", "dcy", "bucket"))


def cluster_key(text: str) -> list[int]:
    """The six integers of a cluster id; ValueError when it is not one."""
    key = [int(k) for k in text.split("_")]
    if len(key) != 6 or any(not -(2**31) <= k < 2**31 for k in key):
        raise ValueError(f"{text!r} is not a cluster id")
    return key


def cluster_feature(r: dict[str, Any], minutes: int) -> dict[str, Any]:
    return {"id": cluster_id(r), **cluster_rows.feature(r, minutes)}


async def bucket_minutes(conn: AsyncConnection) -> int:
    row = await (await conn.execute("SELECT bucket_minutes FROM trip_cluster_params")).fetchone()
    return int(row[0]) if row else 60


async def clusters(
    conn: AsyncConnection, box: Box | None, limit: int, after: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` clusters in key order after the cluster `after`, and whether more follow."""
    p: dict[str, Any] = {"limit": limit + 1}
    after_sql: sql.Composable = sql.SQL("true")
    if after is not None:
        p |= {f"k{i}": k for i, k in enumerate(cluster_key(after))}
        after_sql = sql.SQL(
            "(c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)"
            " > (%(k0)s, %(k1)s, %(k2)s, %(k3)s, %(k4)s, %(k5)s)"
        )
    area: sql.Composable = sql.SQL("true")
    if box is not None:
        p |= _box_params(box)
        area = CLUSTER_AREA
    minutes = await bucket_minutes(conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CLUSTERS.format(after=after_sql, area=area), p, prepare=False)
        rows = await cur.fetchall()
    return [cluster_feature(r, minutes) for r in rows[:limit]], len(rows) > limit


async def cluster(conn: AsyncConnection, feature_id: str) -> dict[str, Any] | None:
    try:
        key = cluster_key(feature_id)
    except ValueError:
        return None
    q = sql.SQL("""
        SELECT c.region_id, r.name AS region, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, c.trips,
               c.sum_ox / c.trips AS ox, c.sum_oy / c.trips AS oy,
               c.sum_dx / c.trips AS dx, c.sum_dy / c.trips AS dy
        FROM trip_clusters c JOIN regions r ON r.id = c.region_id
        WHERE (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket) = (%s, %s, %s, %s, %s, %s)""")
    minutes = await bucket_minutes(conn)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, key)
        r = await cur.fetchone()
    return cluster_feature(r, minutes) if r else None


async def clusters_extent(conn: AsyncConnection) -> tuple[float, float, float, float] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CLUSTERS_EXTENT)
        r = await cur.fetchone()
    if r is None or r["minx"] is None:
        return None
    return (r["minx"], r["miny"], r["maxx"], r["maxy"])
