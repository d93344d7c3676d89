-- Trips per week by the pair (block of the origin, block of the destination), for a box's
-- `both` and `either` (service/analytics/weekly.py): a single-end rollup cannot say where the
-- other end of its trips went, so those answers read every origin in the area from the raw
-- points (a whole-city box on 10M trips: 1.6M index entries, ~0.5-1 s). With the pairs, the
-- blocks taken for the box on both ends are read from the rollup, and the raw points read are
-- only those of the trips with an end in the strips where the box and those blocks disagree.
--
-- A pair block is 0.05 degrees, floor(v / 0.05), on a grid of its own (not the rollup grid's):
-- finer pairs do not compress (on 10M generated trips, 0.05: 708k keys, 14 trips a key; 0.025:
-- 2.83M keys, 3.5 a key). The rows live in weekly_cell_trips under side 'P', with each end's
-- block as one integer, trip_pair_key(x, y) = bx * 4096 + by + 2048 (|by| <= 1800, so the code
-- is unique and fits an integer), so that the loader's merge, partitions and checks take them
-- like any other key. The loader computes the keys with numpy in the same IEEE operations
-- (service/ingest/rollups.pair_keys); tests/integration/test_rollups_exact.py compares the
-- stored rows with this definition.
CREATE FUNCTION trip_pair_key(x double precision, y double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT floor(x / 0.05::double precision)::integer * 4096
          + floor(y / 0.05::double precision)::integer + 2048 $$;

ALTER TABLE weekly_cell_trips DROP CONSTRAINT weekly_cell_trips_side_check;
ALTER TABLE weekly_cell_trips ADD CONSTRAINT weekly_cell_trips_side_check
    CHECK (side IN ('o', 'd', 'O', 'D', 'P'));
INSERT INTO weekly_cell_trips (side, cx, cy, week, region_id, trips, part)
SELECT 'P', trip_pair_key(ox, oy), trip_pair_key(dx, dy), date_trunc('week', started_at)::date,
       region_id, count(*), 0
FROM trips GROUP BY 2, 3, 4, 5
ORDER BY 2, 3, 4, 5;  -- the heap in key order: a box reads runs of neighbouring rows

-- The destination index carries the origin too (the origin index already carries the
-- destination): the trips whose destination lies in a strip are tested on both ends without
-- visiting the heap.
DROP INDEX trips_destination_rows;
CREATE INDEX trips_destination_rows ON trips (dfr, dx)
    INCLUDE (dy, started_at, region_id, ox, oy, id, datasource_id);

-- The server-side path's staging of the cell rows (cells, blocks, pairs) as a function of its
-- own, so that a later change of those rows redefines this and not all of apply_trip_rollups
-- (021 had to copy the whole function to add one INSERT).
CREATE FUNCTION stage_trip_cells(src regclass, g double precision) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
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
    EXECUTE format($q$
        INSERT INTO stage_cells (side, cx, cy, week, region_id, trips)
        SELECT 'P', trip_pair_key(ox, oy), trip_pair_key(dx, dy),
               date_trunc('week', started_at)::date, region_id, count(*)
        FROM %s GROUP BY 2, 3, 4, 5$q$, src);
END
$fn$;

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
    PERFORM stage_trip_cells(src, g);
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
