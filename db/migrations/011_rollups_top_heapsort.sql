-- apply_trip_rollups, third cut: the exact top-clusters refresh in the same statement as the
-- cluster upsert, with a bounded top-N per region (heap sort) instead of a window over every
-- touched cluster, and no temporary table (the first large ingestion into an empty store sent
-- all its ~0.6 clusters per trip through a temp table and a full sort).
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

    -- Counts only grow: the new top of a region is the top of (old top ∪ touched clusters), and
    -- a touched cluster below the region's current N-th count cannot enter it.
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
        ), cand AS MATERIALIZED (
            SELECT up.* FROM up LEFT JOIN thr USING (region_id)
            WHERE up.trips >= coalesce(thr.t, 0)
        ), best AS (
            SELECT b.* FROM (SELECT DISTINCT region_id FROM cand) r
            CROSS JOIN LATERAL (
                SELECT * FROM cand WHERE cand.region_id = r.region_id
                ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket
                LIMIT trip_cluster_top_size()) b
        )
        INSERT INTO trip_cluster_top AS t
        SELECT * FROM best ORDER BY region_id, ocx, ocy, dcx, dcy, bucket
        ON CONFLICT (region_id, ocx, ocy, dcx, dcy, bucket) DO UPDATE
        SET trips = EXCLUDED.trips, sum_ox = EXCLUDED.sum_ox, sum_oy = EXCLUDED.sum_oy,
            sum_dx = EXCLUDED.sum_dx, sum_dy = EXCLUDED.sum_dy
    $q$, src) USING cc, bm;

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

DROP FUNCTION IF EXISTS refresh_trip_cluster_top(regclass);
