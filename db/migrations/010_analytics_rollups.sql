-- Analytics rollups, second cut (issue 3): cheaper to maintain on every ingestion, and a small
-- exact "top clusters per region" table so that GET /clusters never sorts millions of rows.

-- The two `trips DESC` indexes turned every cluster upsert into a non-HOT update (an indexed
-- column changed) and tripled its cost; the top clusters now live in trip_cluster_top.
DROP INDEX IF EXISTS trip_clusters_trips;
DROP INDEX IF EXISTS trip_clusters_region_trips;
-- Free space on each page lets an upsert that hits an existing key stay a HOT update.
ALTER TABLE trip_clusters SET (fillfactor = 70);
ALTER TABLE weekly_cell_trips SET (fillfactor = 70);
ALTER TABLE weekly_trips SET (fillfactor = 70);

-- The top clusters of every region by (trips DESC, key): exactly the first
-- min(trip_cluster_top_size(), clusters of the region) of them. Counts only grow, so after an
-- ingestion the new top is the top of (old top ∪ clusters that ingestion touched): a cluster in
-- neither had at most the old N-th count and loses every tie it lost before.
CREATE TABLE trip_cluster_top (LIKE trip_clusters);
ALTER TABLE trip_cluster_top ADD PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket);
CREATE INDEX trip_cluster_top_rank ON trip_cluster_top (region_id, trips DESC);

CREATE FUNCTION trip_cluster_top_size() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 1000';

-- Keeps trip_cluster_top exact given the new totals of the clusters an ingestion touched
-- (table `touched`, same columns as trip_clusters).
CREATE FUNCTION refresh_trip_cluster_top(touched regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($q$
        WITH thr AS (
            SELECT region_id,
                   CASE WHEN count(*) < trip_cluster_top_size() THEN 0 ELSE min(trips) END AS t
            FROM trip_cluster_top GROUP BY region_id
        ), cand AS (
            SELECT u.* FROM %s u LEFT JOIN thr USING (region_id)
            WHERE u.trips >= coalesce(thr.t, 0)
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY region_id
                                         ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
            FROM cand
        )
        INSERT INTO trip_cluster_top AS c
        SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy
        FROM ranked WHERE rn <= trip_cluster_top_size()
        ORDER BY region_id, ocx, ocy, dcx, dcy, bucket
        ON CONFLICT (region_id, ocx, ocy, dcx, dcy, bucket) DO UPDATE
        SET trips = EXCLUDED.trips, sum_ox = EXCLUDED.sum_ox, sum_oy = EXCLUDED.sum_oy,
            sum_dx = EXCLUDED.sum_dx, sum_dy = EXCLUDED.sum_dy
    $q$, touched);
    DELETE FROM trip_cluster_top c
    USING (SELECT region_id, ocx, ocy, dcx, dcy, bucket,
                  row_number() OVER (PARTITION BY region_id
                                     ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
           FROM trip_cluster_top) r
    WHERE r.rn > trip_cluster_top_size()
      AND (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
        = (r.region_id, r.ocx, r.ocy, r.dcx, r.dcy, r.bucket);
END
$fn$;

-- One aggregate per rollup straight from the batch table (fresh in shared buffers; a narrow
-- temporary copy measured no faster). The time-of-day bucket uses date_part (float8): extract()
-- returns numeric and made the cluster aggregate several times slower. Upserts are sorted by
-- key so that concurrent ingestions lock rows in the same order and cannot deadlock.
CREATE OR REPLACE FUNCTION apply_trip_rollups(src regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    g  double precision;
    cc double precision;
    bm integer;
BEGIN
    SELECT cell INTO g FROM rollup_grid;
    -- FOR SHARE: a concurrent `trips clusters --rebuild` (which updates this row) waits for
    -- running ingestions, and ingestions started after it wait and then see its parameters.
    SELECT cell, bucket_minutes INTO cc, bm FROM trip_cluster_params FOR SHARE;
    SET LOCAL work_mem = '256MB';

    EXECUTE format($q$
        INSERT INTO weekly_trips AS w (region_id, week, datasource_id, trips, last_at)
        SELECT region_id, date_trunc('week', started_at)::date, datasource_id,
               count(*), max(started_at)
        FROM %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (region_id, week, datasource_id) DO UPDATE
        SET trips = w.trips + EXCLUDED.trips, last_at = greatest(w.last_at, EXCLUDED.last_at)
    $q$, src);

    EXECUTE format($q$
        INSERT INTO weekly_cell_trips AS w (side, cx, cy, week, region_id, trips)
        SELECT 'o', floor(ST_X(origin) / $1)::int, floor(ST_Y(origin) / $1)::int,
               date_trunc('week', started_at)::date, region_id, count(*)
        FROM %s GROUP BY 2, 3, 4, 5 ORDER BY 2, 3, 4, 5
        ON CONFLICT (side, cx, cy, week, region_id) DO UPDATE SET trips = w.trips + EXCLUDED.trips
    $q$, src) USING g;

    EXECUTE format($q$
        INSERT INTO weekly_cell_trips AS w (side, cx, cy, week, region_id, trips)
        SELECT 'd', floor(ST_X(destination) / $1)::int, floor(ST_Y(destination) / $1)::int,
               date_trunc('week', started_at)::date, region_id, count(*)
        FROM %s GROUP BY 2, 3, 4, 5 ORDER BY 2, 3, 4, 5
        ON CONFLICT (side, cx, cy, week, region_id) DO UPDATE SET trips = w.trips + EXCLUDED.trips
    $q$, src) USING g;

    DROP TABLE IF EXISTS rollup_touched;
    CREATE TEMP TABLE rollup_touched (LIKE trip_clusters) ON COMMIT DROP;
    EXECUTE format($q$
        WITH up AS (
            INSERT INTO trip_clusters AS c
                (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
            SELECT region_id, floor(ST_X(origin) / $1)::int, floor(ST_Y(origin) / $1)::int,
                   floor(ST_X(destination) / $1)::int, floor(ST_Y(destination) / $1)::int,
                   floor(date_part('epoch', started_at::time) / ($2 * 60))::int,
                   count(*), sum(ST_X(origin)), sum(ST_Y(origin)),
                   sum(ST_X(destination)), sum(ST_Y(destination))
            FROM %s
            GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (region_id, ocx, ocy, dcx, dcy, bucket) DO UPDATE
            SET trips = c.trips + EXCLUDED.trips,
                sum_ox = c.sum_ox + EXCLUDED.sum_ox, sum_oy = c.sum_oy + EXCLUDED.sum_oy,
                sum_dx = c.sum_dx + EXCLUDED.sum_dx, sum_dy = c.sum_dy + EXCLUDED.sum_dy
            RETURNING c.*
        ), thr AS (
            SELECT region_id,
                   CASE WHEN count(*) < trip_cluster_top_size() THEN 0 ELSE min(trips) END AS t
            FROM trip_cluster_top GROUP BY region_id
        )
        INSERT INTO rollup_touched
        SELECT up.* FROM up LEFT JOIN thr USING (region_id) WHERE up.trips >= coalesce(thr.t, 0)
    $q$, src) USING cc, bm;
    PERFORM refresh_trip_cluster_top('rollup_touched');
    DROP TABLE rollup_touched;
END
$fn$;

-- `trips clusters --rebuild`: new parameters, clusters recomputed from every stored trip.
CREATE FUNCTION rebuild_trip_clusters(p_cell double precision, p_bucket_minutes integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    UPDATE trip_cluster_params SET cell = p_cell, bucket_minutes = p_bucket_minutes;
    LOCK TABLE trip_clusters, trip_cluster_top IN ACCESS EXCLUSIVE MODE;
    TRUNCATE trip_clusters, trip_cluster_top;
    INSERT INTO trip_clusters
        (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
    SELECT region_id, floor(ST_X(origin) / p_cell)::int, floor(ST_Y(origin) / p_cell)::int,
           floor(ST_X(destination) / p_cell)::int, floor(ST_Y(destination) / p_cell)::int,
           floor(date_part('epoch', started_at::time) / (p_bucket_minutes * 60))::int,
           count(*), sum(ST_X(origin)), sum(ST_Y(origin)),
           sum(ST_X(destination)), sum(ST_Y(destination))
    FROM trips GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO trip_cluster_top
    SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy
    FROM (SELECT *, row_number() OVER (PARTITION BY region_id
                                       ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
          FROM trip_clusters) r
    WHERE rn <= trip_cluster_top_size();
    RETURN n;
END
$fn$;

-- Seed the top table from whatever clusters an earlier version stored.
INSERT INTO trip_cluster_top
SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy
FROM (SELECT *, row_number() OVER (PARTITION BY region_id
                                   ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
      FROM trip_clusters) r
WHERE rn <= trip_cluster_top_size();
