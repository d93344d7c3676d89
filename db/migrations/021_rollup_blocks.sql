-- Blocks of 5 x 5 rollup cells in weekly_cell_trips, under the sides 'O' (origin) and 'D'
-- (destination): cx, cy = floor(cell / 5). A big box's inner rectangle of cells is read as its
-- whole blocks plus the fringe of cells around them (service/analytics/weekly.py): a city-sized
-- box read ~45k rollup rows, each a heap fetch (~0.8 us; `trips` is not in the primary key),
-- and now reads a fraction of that. The loader computes a job's block rows from its cell totals
-- (service/ingest/rollups.py); they are keys like any other for the merge. Stored rollups are
-- backfilled here, into partition 0 (one row per block key: a key lives in one partition).
ALTER TABLE weekly_cell_trips DROP CONSTRAINT weekly_cell_trips_side_check;
ALTER TABLE weekly_cell_trips ADD CONSTRAINT weekly_cell_trips_side_check
    CHECK (side IN ('o', 'd', 'O', 'D'));
INSERT INTO weekly_cell_trips (side, cx, cy, week, region_id, trips, part)
SELECT upper(side::text)::"char", floor(cx / 5.0)::int, floor(cy / 5.0)::int, week, region_id,
       sum(trips), 0
FROM weekly_cell_trips WHERE side IN ('o', 'd')
GROUP BY 1, 2, 3, 4, 5;

-- The server-side path (the grids changed under a running job) stages the block rows too: the
-- function of 017 with one INSERT added after the cells are staged.
CREATE OR REPLACE FUNCTION apply_trip_rollups(src regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    g  double precision;
    cc double precision;
    bm integer;
BEGIN
    PERFORM trip_rollups_lock();
    SELECT cell INTO g FROM rollup_grid;
    SELECT cell, bucket_minutes INTO cc, bm FROM trip_cluster_params FOR SHARE;
    SET LOCAL work_mem = '256MB';
    DROP TABLE IF EXISTS stage_weekly, stage_cells, stage_clusters, stage_top;
    EXECUTE format($q$
        CREATE TEMP TABLE stage_weekly ON COMMIT DROP AS
        SELECT region_id, date_trunc('week', started_at)::date AS week, datasource_id,
               count(*) AS trips, max(started_at) AS last_at
        FROM %s GROUP BY 1, 2, 3$q$, src);
    CREATE TEMP TABLE stage_cells (LIKE weekly_cell_trips INCLUDING DEFAULTS) ON COMMIT DROP;
    EXECUTE format($q$
        INSERT INTO stage_cells (side, cx, cy, week, region_id, trips)
        SELECT 'o', floor(ox / $1)::int, floor(oy / $1)::int,
               date_trunc('week', started_at)::date, region_id, count(*)
        FROM %1$s GROUP BY 2, 3, 4, 5
        UNION ALL
        SELECT 'd', floor(dx / $1)::int, floor(dy / $1)::int,
               date_trunc('week', started_at)::date, region_id, count(*)
        FROM %1$s GROUP BY 2, 3, 4, 5$q$, src) USING g;
    INSERT INTO stage_cells (side, cx, cy, week, region_id, trips)
    SELECT upper(side::text)::"char", floor(cx / 5.0)::int, floor(cy / 5.0)::int, week,
           region_id, sum(trips)
    FROM stage_cells GROUP BY 1, 2, 3, 4, 5;
    CREATE TEMP TABLE stage_clusters (LIKE trip_clusters INCLUDING DEFAULTS) ON COMMIT DROP;
    EXECUTE format($q$
        INSERT INTO stage_clusters
            (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
        SELECT region_id, floor(ox / $1)::int, floor(oy / $1)::int,
               floor(dx / $1)::int, floor(dy / $1)::int,
               floor(date_part('epoch', started_at::time) / ($2 * 60))::int,
               count(*), sum(ox), sum(oy), sum(dx), sum(dy)
        FROM %s GROUP BY 1, 2, 3, 4, 5, 6$q$, src) USING cc, bm;
    CREATE TEMP TABLE stage_top ON COMMIT DROP AS
    SELECT region_id, ocx, ocy, dcx, dcy, bucket
    FROM (SELECT *, row_number() OVER (PARTITION BY region_id
                                       ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
          FROM stage_clusters) r
    WHERE rn <= trip_cluster_top_size();
    PERFORM apply_staged_rollups(g, cc, bm, 0, 'stage_cells', 'stage_clusters');
    DROP TABLE stage_weekly, stage_cells, stage_clusters, stage_top;
END
$fn$;
