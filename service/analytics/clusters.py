"""Similar-trip clusters (SPEC section 2) as GeoJSON, and their parameters.

`trip_clusters` is keyed by (region, origin cell, destination cell, time-of-day bucket) and kept
by every ingestion: a view summing the partitions of `trip_cluster_parts`, where each large job
stores its own totals (db/migrations/025) until `compact` folds them. `trip_cluster_top` holds
each region's first N clusters by (trips DESC, key) exactly (db/migrations/010, 025): a request
is answered from it when that is provably the same answer (for each region in scope, the
region's list is complete or has `limit` matches), else from the known clusters when no other
can be in the answer (`_KNOWN_COVERAGE`), otherwise from the full view.

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
MAX_LIMIT = 1000  # = trip_cluster_top_size() in db/migrations/010

_FILTERS = sql.SQL("""
      AND (%(regions)s::int[] IS NULL OR c.region_id = ANY(%(regions)s::int[]))
      AND c.bucket BETWEEN %(b0)s AND %(b1)s
      AND c.trips >= %(min_trips)s
      AND (%(minx)s::float8 IS NULL OR (
            c.sum_ox / c.trips BETWEEN %(minx)s AND %(maxx)s
            AND c.sum_oy / c.trips BETWEEN %(miny)s AND %(maxy)s))""")

_SELECT = sql.SQL("""
    SELECT r.name AS region, c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, c.trips,
           c.sum_ox / c.trips AS ox, c.sum_oy / c.trips AS oy,
           c.sum_dx / c.trips AS dx, c.sum_dy / c.trips AS dy
    FROM {table} c JOIN regions r ON r.id = c.region_id
    WHERE true {filters}
    ORDER BY c.trips DESC, c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket
    LIMIT %(limit)s""")

# For each region in scope: is its top list complete, and how many of its entries match?
_TOP_COVERAGE = sql.SQL("""
    SELECT s.region_id, s.n < trip_cluster_top_size() AS complete, coalesce(m.matches, 0)
    FROM (SELECT region_id, count(*) AS n FROM trip_cluster_top
          WHERE %(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[])
          GROUP BY region_id) s
    LEFT JOIN (SELECT c.region_id, count(*) AS matches FROM trip_cluster_top c
               WHERE true {filters}
               GROUP BY c.region_id) m USING (region_id)""").format(filters=_FILTERS)


# The known clusters (db/migrations/025) answer when no other cluster can be among the first
# `limit` matches: every other cluster has at most its region's bound, so either min_trips is
# above every bound in scope, or the known clusters have `limit` matches and the last of them
# has more trips than every bound in scope.
_KNOWN_COVERAGE = sql.SQL("""
    SELECT (SELECT coalesce(max(bound), 0) FROM trip_cluster_bound
            WHERE %(regions)s::int[] IS NULL OR region_id = ANY(%(regions)s::int[])),
           (SELECT c.trips FROM trip_cluster_known c WHERE true {filters}
            ORDER BY c.trips DESC OFFSET %(limit)s - 1 LIMIT 1)""").format(filters=_FILTERS)


async def _answering_table(conn: AsyncConnection, p: dict[str, Any]) -> str:
    """The smallest table that provably gives the whole answer: the top list, the known
    clusters, or the view of every cluster."""
    cur = await conn.execute(_TOP_COVERAGE, p)
    coverage = await cur.fetchall()
    if all(complete or matches >= p["limit"] for _, complete, matches in coverage):
        return "trip_cluster_top"
    cur = await conn.execute(_KNOWN_COVERAGE, p)
    row = await cur.fetchone()
    assert row is not None
    bound, last = row
    if p["min_trips"] > bound or (last is not None and last > bound):
        return "trip_cluster_known"
    return "trip_clusters"


async def params(conn: AsyncConnection) -> tuple[float, int]:
    cur = await conn.execute("SELECT cell, bucket_minutes FROM trip_cluster_params")
    row = await cur.fetchone()
    assert row is not None
    return float(row[0]), int(row[1])


def bucket_label(bucket: int, minutes: int) -> str:
    start, end = bucket * minutes, (bucket + 1) * minutes
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


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
    table = await _answering_table(conn, p)
    log.debug("clusters answered from %s", table)
    query = _SELECT.format(table=sql.Identifier(table), filters=_FILTERS)
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as c:
        await c.execute(query, p)
        rows = await c.fetchall()
    features = [
        {
            "type": "Feature",
            "geometry": {
                "type": "LineString",
                "coordinates": [[r["ox"], r["oy"]], [r["dx"], r["dy"]]],
            },
            "properties": {
                "region": r["region"],
                "origin_cell": [r["ocx"], r["ocy"]],
                "destination_cell": [r["dcx"], r["dcy"]],
                "time_bucket": bucket_label(r["bucket"], minutes),
                "trips": r["trips"],
            },
        }
        for r in rows
    ]
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
        if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM trip_cluster_parts)").fetchone()[0]:  # type: ignore[index]
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
        row = conn.execute(
            "SELECT rebuild_trip_clusters(%s, %s)", [cell, bucket_minutes]
        ).fetchone()
    assert row is not None
    return int(row[0])


def partitions(conn: psycopg.Connection) -> int:
    """How many partitions hold cluster totals (db/migrations/025)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'trip_cluster_parts'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


def compact(conn: psycopg.Connection) -> int:
    """Fold every partition of cluster totals into one (one transaction); returns how many
    were folded, 0 when there was one. Totals, and so the answers, do not change."""
    with conn.transaction():
        row = conn.execute("SELECT compact_trip_clusters()").fetchone()
    assert row is not None
    return int(row[0])
