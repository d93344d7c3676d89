-- Rollups kept current by every ingestion, in the ingestion's own transaction.

-- Trips per region, week (Monday of date_trunc('week', started_at)) and datasource, with the
-- latest trip time: answers region weekly averages, counts by region or datasource, and
-- "latest datasource" questions without touching the trips.
CREATE TABLE weekly_trips (
    region_id     integer NOT NULL,
    week          date NOT NULL,
    datasource_id integer NOT NULL,
    trips         bigint NOT NULL,
    last_at       timestamp without time zone NOT NULL,
    PRIMARY KEY (region_id, week, datasource_id)
);

-- Trips per week and fine grid cell of one end of the trip ('o' origin, 'd' destination).
-- The grid is floor(coordinate / rollup_grid.cell); cells wholly inside an area are answered
-- from here, only the cells cut by the area's edge from the raw points.
CREATE TABLE rollup_grid (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cell      double precision NOT NULL CHECK (cell > 0)
);
INSERT INTO rollup_grid VALUES (true, 0.01);

CREATE TABLE weekly_cell_trips (
    side      "char" NOT NULL CHECK (side IN ('o', 'd')),
    cx        integer NOT NULL,
    cy        integer NOT NULL,
    week      date NOT NULL,
    region_id integer NOT NULL,
    trips     bigint NOT NULL,
    PRIMARY KEY (side, cx, cy, week, region_id)
);

-- Similar trips: (region, origin cell, destination cell, time-of-day bucket), SPEC section 2.
CREATE TABLE trip_cluster_params (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cell           double precision NOT NULL CHECK (cell > 0),
    bucket_minutes integer NOT NULL CHECK (bucket_minutes > 0 AND 1440 % bucket_minutes = 0)
);
INSERT INTO trip_cluster_params VALUES (true, 0.01, 60);

CREATE TABLE trip_clusters (
    region_id integer NOT NULL,
    ocx       integer NOT NULL,
    ocy       integer NOT NULL,
    dcx       integer NOT NULL,
    dcy       integer NOT NULL,
    bucket    integer NOT NULL,
    trips     bigint NOT NULL,
    sum_ox    double precision NOT NULL,
    sum_oy    double precision NOT NULL,
    sum_dx    double precision NOT NULL,
    sum_dy    double precision NOT NULL,
    PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket)
);
CREATE INDEX trip_clusters_trips ON trip_clusters (trips DESC);
CREATE INDEX trip_clusters_region_trips ON trip_clusters (region_id, trips DESC);

-- Adds the aggregates of one batch of new trips (any table or view with the columns of
-- `trips`) to every rollup. Upserts are sorted by key so that concurrent ingestions lock rows
-- in the same order and cannot deadlock.
CREATE FUNCTION apply_trip_rollups(src regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    g  double precision;
    cc double precision;
    bm integer;
BEGIN
    SELECT cell INTO g FROM rollup_grid;
    SELECT cell, bucket_minutes INTO cc, bm FROM trip_cluster_params;

    EXECUTE format($q$
        INSERT INTO weekly_trips AS w (region_id, week, datasource_id, trips, last_at)
        SELECT region_id, date_trunc('week', started_at)::date AS week, datasource_id,
               count(*), max(started_at)
        FROM %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (region_id, week, datasource_id) DO UPDATE
        SET trips = w.trips + EXCLUDED.trips, last_at = greatest(w.last_at, EXCLUDED.last_at)
    $q$, src);

    EXECUTE format($q$
        INSERT INTO weekly_cell_trips AS w (side, cx, cy, week, region_id, trips)
        SELECT side, cx, cy, week, region_id, sum(n) FROM (
            SELECT 'o'::"char" AS side, floor(ST_X(origin) / $1)::int AS cx,
                   floor(ST_Y(origin) / $1)::int AS cy,
                   date_trunc('week', started_at)::date AS week, region_id, 1 AS n
            FROM %1$s
            UNION ALL
            SELECT 'd'::"char", floor(ST_X(destination) / $1)::int,
                   floor(ST_Y(destination) / $1)::int,
                   date_trunc('week', started_at)::date, region_id, 1
            FROM %1$s
        ) s
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (side, cx, cy, week, region_id) DO UPDATE SET trips = w.trips + EXCLUDED.trips
    $q$, src) USING g;

    EXECUTE format($q$
        INSERT INTO trip_clusters AS c
            (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
        SELECT region_id,
               floor(ST_X(origin) / $1)::int, floor(ST_Y(origin) / $1)::int,
               floor(ST_X(destination) / $1)::int, floor(ST_Y(destination) / $1)::int,
               floor(extract(epoch FROM started_at::time) / ($2 * 60))::int,
               count(*), sum(ST_X(origin)), sum(ST_Y(origin)),
               sum(ST_X(destination)), sum(ST_Y(destination))
        FROM %s
        GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (region_id, ocx, ocy, dcx, dcy, bucket) DO UPDATE
        SET trips = c.trips + EXCLUDED.trips,
            sum_ox = c.sum_ox + EXCLUDED.sum_ox, sum_oy = c.sum_oy + EXCLUDED.sum_oy,
            sum_dx = c.sum_dx + EXCLUDED.sum_dx, sum_dy = c.sum_dy + EXCLUDED.sum_dy
    $q$, src) USING cc, bm;
END
$fn$;
