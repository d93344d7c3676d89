"""Similar-trip clusters (SPEC section 2) as GeoJSON, and their parameters.

`trip_clusters` is a table with one row per (region, origin node, destination node, time-of-day
bucket), a node being where ST_SnapToGrid puts the point (trip_cluster_rows() in
db/migrations/001_baseline.sql); every ingestion adds its trips in its own transaction. A
region's first clusters by trips come from the index (region_id, trips DESC); the store's are
the merge of each region's.

Parameters: the cell and bucket in `trip_cluster_params` are the ones the stored clusters were
built with; ingestions always use those. When TRIPS_CLUSTER_CELL / _BUCKET_MINUTES differ, an
empty table takes the new values at start-up, and a non-empty one keeps its parameters (with a
warning) until `trips clusters --rebuild` recomputes it from the stored trips.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection, sql

from service.settings import Settings

if TYPE_CHECKING:  # shapely (behind area) costs a quarter second of start-up to `trips ingest`
    from service.analytics.area import BBox

log = logging.getLogger("trips.analytics")
MAX_LIMIT = 1000

# Each region's first `limit` matches (trip_clusters_top, one index scan per region), merged.
_SELECT = sql.SQL("""
    SELECT r.name AS region, c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, c.trips,
           c.sum_ox / c.trips AS ox, c.sum_oy / c.trips AS oy,
           c.sum_dx / c.trips AS dx, c.sum_dy / c.trips AS dy
    FROM trip_clusters_top(%(limit)s, %(regions)s::int[], %(b0)s, %(b1)s, %(min_trips)s,
                           CASE WHEN %(minx)s::float8 IS NULL THEN NULL
                                ELSE ST_MakeBox2D(ST_MakePoint(%(minx)s, %(miny)s),
                                                  ST_MakePoint(%(maxx)s, %(maxy)s)) END) c
    JOIN regions r ON r.id = c.region_id
    ORDER BY c.trips DESC, c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket
    LIMIT %(limit)s""")


async def params(conn: AsyncConnection) -> tuple[float, int]:
    cur = await conn.execute("SELECT cell, bucket_minutes FROM trip_cluster_params")
    row = await cur.fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


def bucket_label(bucket: int, minutes: int) -> str:
    start, end = bucket * minutes, (bucket + 1) * minutes
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def feature(r: dict[str, Any], minutes: int) -> dict[str, Any]:
    """A cluster row as a GeoJSON Feature: its mean origin → mean destination."""
    return {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[r["ox"], r["oy"]], [r["dx"], r["dy"]]]},
        "properties": {
            "region": r["region"],
            "origin_cell": [r["ocx"], r["ocy"]],
            "destination_cell": [r["dcx"], r["dcy"]],
            "time_bucket": bucket_label(r["bucket"], minutes),
            "trips": r["trips"],
        },
    }


def parse_time(value: str | None, name: str, default: int) -> int:
    """'HH:MM' (or 'HH') as minutes since midnight; 24:00 allowed as the end of the day."""
    if value is None or value == "":
        return default
    try:
        hh, _, mm = value.partition(":")
        h, m = int(hh), int(mm or 0)
    except ValueError:
        raise ValueError(f"{name} must be a time HH:MM, got {value!r}") from None
    if not (0 <= h <= 24 and 0 <= m < 60) or h * 60 + m > 1440:
        raise ValueError(f"{name} must be a time between 00:00 and 24:00, got {value!r}")
    return h * 60 + m


async def clusters(
    conn: AsyncConnection,
    *,
    regions: list[int] | None,
    bbox: BBox | None,
    time_from: int = 0,
    time_to: int = 1440,
    min_trips: int = 1,
    limit: int = 100,
) -> dict[str, Any]:
    """Clusters most trips first, as a GeoJSON FeatureCollection.

    Buckets overlapping [time_from, time_to) (minutes since midnight) are kept.
    """
    cell, minutes = await params(conn)
    if time_to <= time_from:
        raise ValueError(f"time_to must be after time_from ({time_from} >= {time_to} minutes)")
    p = {
        "regions": regions,
        "b0": time_from // minutes,
        "b1": (time_to - 1) // minutes,
        "min_trips": min_trips,
        "limit": min(limit, MAX_LIMIT),
        "minx": bbox.minx if bbox else None,
        "miny": bbox.miny if bbox else None,
        "maxx": bbox.maxx if bbox else None,
        "maxy": bbox.maxy if bbox else None,
    }
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as c:
        await c.execute(_SELECT, p)
        rows = await c.fetchall()
    features = [feature(r, minutes) for r in rows]
    return {
        "type": "FeatureCollection",
        "features": features,
        "params": {"cell": cell, "bucket_minutes": minutes},
    }


def sync_params(conn: psycopg.Connection, settings: Settings) -> str | None:
    """At start-up: an empty cluster table takes the settings' parameters; otherwise warn."""
    with conn.transaction():
        row = conn.execute(
            "SELECT cell, bucket_minutes FROM trip_cluster_params FOR UPDATE"
        ).fetchone()
        assert row is not None
        wanted = (settings.cluster_cell, settings.cluster_bucket_minutes)
        if (float(row[0]), int(row[1])) == wanted:
            return None
        if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM trip_clusters)").fetchone()[0]:  # type: ignore[index]
            conn.execute(
                "UPDATE trip_cluster_params SET cell = %s, bucket_minutes = %s", list(wanted)
            )
            return None
    msg = (
        f"stored clusters use cell {row[0]} and bucket {row[1]} min, settings say "
        f"{wanted[0]} and {wanted[1]}: ingestions keep the stored parameters until "
        "`trips clusters --rebuild`"
    )
    log.warning(msg)
    return msg


def rebuild(conn: psycopg.Connection, cell: float, bucket_minutes: int) -> int:
    """Recompute every cluster from the stored trips with new parameters (one transaction)."""
    with conn.transaction():
        conn.execute("SET LOCAL work_mem = '256MB'")
        conn.execute("SELECT trip_rollups_lock()")
        conn.execute("TRUNCATE trip_clusters, trip_cluster_tops")
        conn.execute(
            "UPDATE trip_cluster_params SET cell = %s, bucket_minutes = %s", [cell, bucket_minutes]
        )
        cur = conn.execute(
            """INSERT INTO trip_clusters
                   (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
               SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips,
                      sum_ox, sum_oy, sum_dx, sum_dy
               FROM trip_cluster_rows('trips', %s, %s)""",
            [cell, bucket_minutes],
        )
        n = cur.rowcount
        conn.execute("SELECT trip_cluster_tops_refresh()")
    return n
