"""Mapbox Vector Tiles of the collections, built in PostGIS, one query per tile.

`ST_TileEnvelope` gives the tile in Web Mercator; rows are selected through the GiST indexes with
`&&` on the tile's lon/lat box, clipped and quantised by `ST_AsMVTGeom`, encoded by `ST_AsMVT`.

- trips, below DETAIL_ZOOM: one point per occupied cell of a 64 x 64 grid over the tile
  (`ST_SnapToGrid` at the tile's resolution), `trips` = the trips whose origin is in the cell,
  counted from trip_clusters (each cluster at its mean origin), so a tile reads clusters, never
  millions of trips;
- trips, from DETAIL_ZOOM: the trips themselves, lines origin → destination, those with an end
  in the tile (a line that crosses the tile with both ends outside is left out of that tile;
  at these zooms a city's trips end within a tile or its neighbours), at most MAX_TRIPS;
- clusters: the clusters' lines (mean origin → mean destination) that meet the tile, most trips
  first, at most MAX_CLUSTERS, with `trips`.
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql

DETAIL_ZOOM = 13
MAX_ZOOM = 24
GRID = 64  # cells per tile side for the aggregated points
MAX_TRIPS = 20_000
MAX_CLUSTERS = 1_000
EXTENT = 4096
BUFFER = 64

_ENV = sql.SQL("""env AS (
    SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS e,
           ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), 4326) AS ll
)""")

TRIPS_CELLS = sql.SQL("""
    WITH {env},
    pts AS (
        SELECT ST_SetSRID(ST_MakePoint(c.sum_ox / c.trips, c.sum_oy / c.trips), 4326) AS g,
               c.trips
        FROM trip_clusters c
    ),
    cells AS (
        SELECT ST_SnapToGrid(ST_Transform(pts.g, 3857), %(cell)s) AS g, sum(pts.trips) AS trips
        FROM pts, env
        WHERE pts.g && env.ll
        GROUP BY 1
    ),
    mvt AS (
        SELECT ST_AsMVTGeom(cells.g, env.e, {extent}, {buffer}, true) AS geom,
               cells.trips::bigint AS trips
        FROM cells, env
    )
    SELECT ST_AsMVT(mvt.*, 'trips', {extent}, 'geom') FROM mvt WHERE geom IS NOT NULL""")

TRIPS_LINES = sql.SQL("""
    WITH {env},
    hit AS (
        SELECT t.id, t.started_at, t.origin, t.destination
        FROM trips t, env
        WHERE t.origin && env.ll OR t.destination && env.ll
        LIMIT {max_trips}
    ),
    mvt AS (
        SELECT ST_AsMVTGeom(ST_Transform(ST_MakeLine(hit.origin, hit.destination), 3857),
                            env.e, {extent}, {buffer}, true) AS geom,
               hit.id, hit.started_at::text AS datetime
        FROM hit, env
    )
    SELECT ST_AsMVT(mvt.*, 'trips', {extent}, 'geom', 'id') FROM mvt WHERE geom IS NOT NULL""")

CLUSTERS = sql.SQL("""
    WITH {env},
    lines AS (
        SELECT ST_SetSRID(ST_MakeLine(ST_MakePoint(c.sum_ox / c.trips, c.sum_oy / c.trips),
                                      ST_MakePoint(c.sum_dx / c.trips, c.sum_dy / c.trips)),
                          4326) AS g,
               c.trips, r.name AS region
        FROM trip_clusters c JOIN regions r ON r.id = c.region_id
    ),
    hit AS (
        SELECT lines.* FROM lines, env
        WHERE lines.g && env.ll
        ORDER BY lines.trips DESC
        LIMIT {max_clusters}
    ),
    mvt AS (
        SELECT ST_AsMVTGeom(ST_Transform(hit.g, 3857), env.e, {extent}, {buffer}, true) AS geom,
               hit.trips, hit.region
        FROM hit, env
    )
    SELECT ST_AsMVT(mvt.*, 'clusters', {extent}, 'geom') FROM mvt WHERE geom IS NOT NULL""")

WORLD = 2 * 20037508.342789244  # Web Mercator's width in metres


def _fmt(q: sql.SQL) -> sql.Composed:
    return q.format(
        env=_ENV,
        extent=sql.Literal(EXTENT),
        buffer=sql.Literal(BUFFER),
        max_trips=sql.Literal(MAX_TRIPS),
        max_clusters=sql.Literal(MAX_CLUSTERS),
    )


async def tile(conn: AsyncConnection, collection: str, z: int, x: int, y: int) -> bytes:
    """The tile's MVT bytes (empty when nothing is in it)."""
    p = {"z": z, "x": x, "y": y, "margin": BUFFER / EXTENT, "cell": WORLD / 2**z / GRID}
    if collection == "clusters":
        query = _fmt(CLUSTERS)
    elif z < DETAIL_ZOOM:
        query = _fmt(TRIPS_CELLS)
    else:
        query = _fmt(TRIPS_LINES)
    row = await (await conn.execute(query, p, prepare=False)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""
