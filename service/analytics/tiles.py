"""Mapbox Vector Tiles of the collections, built in PostGIS, one query per tile.

`ST_TileEnvelope` gives the tile in Web Mercator; rows are selected through the GiST indexes with
`&&` on the tile's lon/lat box, clipped and quantised by `ST_AsMVTGeom`, encoded by `ST_AsMVT`.

- trips, below DETAIL_ZOOM: one point per occupied cell of a 64 x 64 grid over the tile
  (`ST_SnapToGrid` at the tile's resolution), `trips` = the trips whose origin is in the cell,
  counted from the summary `trip_cells` (blocks of 0.025 degree below BLOCK_ZOOM, cells of
  0.005 degree above, each at its centre), so a tile reads at most a few thousand summary rows,
  never millions of trips;
- trips, from DETAIL_ZOOM: the trips themselves, lines origin → destination, those with an end
  in the tile (a line that crosses the tile with both ends outside is left out of that tile;
  at these zooms a city's trips end within a tile or its neighbours), at most MAX_TRIPS;
- clusters: the clusters' lines (mean origin → mean destination), most trips first, at most
  MAX_CLUSTERS, with `trips`: below TOP_ZOOM the busiest of each region (its first 5,000) that
  meet the tile, from TOP_ZOOM those whose origin node is in the tile (see `_IN_TILE`).
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql

DETAIL_ZOOM = 13
BLOCK_ZOOM = 10  # below: the summary's blocks; from here: its cells
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
    cells AS (
        SELECT ST_SnapToGrid(ST_Transform(ST_Centroid(k.env), 3857), %(cell)s) AS g,
               sum(k.trips) AS trips
        FROM trip_cells k, env
        WHERE k.side = %(side)s AND k.env && env.ll
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
    hit AS (
        SELECT c.geom AS g, c.trips, c.region_id FROM ({source}) c, env
        WHERE c.geom && env.ll
        ORDER BY c.trips DESC
        LIMIT {max_clusters}
    ),
    mvt AS (
        SELECT ST_AsMVTGeom(ST_Transform(hit.g, 3857), env.e, {extent}, {buffer}, true) AS geom,
               hit.trips, r.name AS region
        FROM hit JOIN regions r ON r.id = hit.region_id, env
    )
    SELECT ST_AsMVT(mvt.*, 'clusters', {extent}, 'geom') FROM mvt WHERE geom IS NOT NULL""")

# Below TOP_ZOOM a tile holds up to a whole city's clusters (millions at 100M): it draws the
# busiest of each region, from the copy trip_cluster_tops (each region's first 5,000 by trips,
# refreshed by every ingestion), through its GiST on the lines. From TOP_ZOOM a tile spans a few
# nodes: the clusters whose origin node lies in it (widened by a node), through the key
# (region_id, ocx, ocy), one range per column of nodes (trip_clusters_near).
TOP_ZOOM = 14
_TOP = sql.SQL("SELECT * FROM trip_cluster_tops")
_IN_TILE = sql.SQL("SELECT * FROM env, LATERAL trip_clusters_near(Box2D(env.ll), {}) c").format(
    sql.Literal(MAX_CLUSTERS)
)

WORLD = 2 * 20037508.342789244  # Web Mercator's width in metres


def _fmt(q: sql.SQL, source: sql.Composable = _TOP) -> sql.Composed:
    return q.format(
        source=source,
        env=_ENV,
        extent=sql.Literal(EXTENT),
        buffer=sql.Literal(BUFFER),
        max_trips=sql.Literal(MAX_TRIPS),
        max_clusters=sql.Literal(MAX_CLUSTERS),
    )


async def tile(conn: AsyncConnection, collection: str, z: int, x: int, y: int) -> bytes:
    """The tile's MVT bytes (empty when nothing is in it)."""
    p = {"z": z, "x": x, "y": y, "margin": BUFFER / EXTENT, "cell": WORLD / 2**z / GRID}
    p["side"] = "O" if z < BLOCK_ZOOM else "o"
    if collection == "clusters":
        query = _fmt(CLUSTERS, _TOP if z < TOP_ZOOM else _IN_TILE)
    elif z < DETAIL_ZOOM:
        query = _fmt(TRIPS_CELLS)
    else:
        query = _fmt(TRIPS_LINES)
    row = await (await conn.execute(query, p, prepare=False)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""
