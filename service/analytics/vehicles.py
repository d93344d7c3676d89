"""Queries behind the original service's /vehicles routes (kept for existing clients)."""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

VEHICLE_SELECT = """
    SELECT t.id, r.name AS region,
           ST_X(t.origin) AS origin_coord_point_x, ST_Y(t.origin) AS origin_coord_point_y,
           ST_X(t.destination) AS destination_coord_point_x,
           ST_Y(t.destination) AS destination_coord_point_y,
           t.started_at AS datetime, d.name AS datasource
    FROM trips t
    JOIN regions r ON r.id = t.region_id
    JOIN datasources d ON d.id = t.datasource_id
"""

# Coordinate filters keep the original's meaning: the value's text starts with what was given
# (`7.67` matches 7.6728…). LIKE metacharacters in the input are escaped.
LIST_VEHICLES = (
    VEHICLE_SELECT
    + """
    WHERE (%(region)s::text IS NULL OR lower(r.name) = lower(%(region)s))
      AND (%(datasource)s::text IS NULL OR d.name = %(datasource)s)
      AND (%(ox)s::text IS NULL OR ST_X(t.origin)::text LIKE %(ox)s || '%%')
      AND (%(oy)s::text IS NULL OR ST_Y(t.origin)::text LIKE %(oy)s || '%%')
      AND (%(dx)s::text IS NULL OR ST_X(t.destination)::text LIKE %(dx)s || '%%')
      AND (%(dy)s::text IS NULL OR ST_Y(t.destination)::text LIKE %(dy)s || '%%')
      AND (%(day)s::date IS NULL OR (t.started_at >= %(day)s::date
                                     AND t.started_at < %(day)s::date + 1))
    ORDER BY t.id
    LIMIT %(limit)s
"""
)
GET_VEHICLE = VEHICLE_SELECT + " WHERE t.id = %(id)s"

COUNT_BY = {
    "region": """SELECT r.name AS region, sum(w.trips)::bigint AS count
                 FROM weekly_trips w JOIN regions r ON r.id = w.region_id
                 GROUP BY r.name ORDER BY r.name""",
    "datasource": """SELECT d.name AS datasource, sum(w.trips)::bigint AS count
                     FROM weekly_trips w JOIN datasources d ON d.id = w.datasource_id
                     GROUP BY d.name ORDER BY d.name""",
}

WEEKLY_TRIPS = """
    SELECT extract(week FROM w.week)::int AS week_number, w.week, r.name AS region,
           sum(w.trips)::bigint AS freq_trip
    FROM weekly_trips w JOIN regions r ON r.id = w.region_id
    GROUP BY w.week, r.name
    ORDER BY w.week, r.name
"""

WEEKLY_AVG = """
    SELECT region, avg(trips)::float8 AS freq_avg_weekly_trips
    FROM (SELECT r.name AS region, w.week, sum(w.trips) AS trips
          FROM weekly_trips w JOIN regions r ON r.id = w.region_id
          GROUP BY r.name, w.week) per_week
    GROUP BY region ORDER BY region
"""


def like_prefix(value: str | None) -> str | None:
    if value is None:
        return None
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _all(
    conn: AsyncConnection, query: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params or {})
        return list(await cur.fetchall())


async def list_vehicles(
    conn: AsyncConnection,
    *,
    region: str | None,
    datasource: str | None,
    ox: str | None,
    oy: str | None,
    dx: str | None,
    dy: str | None,
    day: date | None,
    limit: int,
) -> list[dict[str, Any]]:
    return await _all(
        conn,
        LIST_VEHICLES,
        {
            "region": region,
            "datasource": datasource,
            "ox": like_prefix(ox),
            "oy": like_prefix(oy),
            "dx": like_prefix(dx),
            "dy": like_prefix(dy),
            "day": day,
            "limit": limit,
        },
    )


async def get_vehicle(conn: AsyncConnection, trip_id: int) -> dict[str, Any] | None:
    rows = await _all(conn, GET_VEHICLE, {"id": trip_id})
    return rows[0] if rows else None


async def count_by(conn: AsyncConnection, column: str) -> list[dict[str, Any]]:
    return await _all(conn, COUNT_BY[column])


async def weekly_trips(conn: AsyncConnection) -> list[dict[str, Any]]:
    return await _all(conn, WEEKLY_TRIPS)


async def weekly_avg(conn: AsyncConnection) -> list[dict[str, Any]]:
    return await _all(conn, WEEKLY_AVG)


async def ingest_status(conn: AsyncConnection) -> list[dict[str, Any]]:
    return await _all(
        conn,
        """
        SELECT state, count(*) AS jobs, min(started_at) AS start_time,
               max(finished_at) AS end_time
        FROM ingestion_jobs GROUP BY state""",
    )
