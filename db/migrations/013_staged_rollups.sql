-- Rollups from client-side aggregates (service/ingest/rollups.py). The loader groups the job's
-- rows by rollup key with numpy while the server runs the COPY and copies the job's totals (one
-- row per key) into three temporary tables of the job's transaction (stage_weekly, stage_cells,
-- stage_clusters, and stage_top); this function merges them into the rollups. Against apply_trip_rollups (010/011) it saves the
-- server the per-trip ST_X/ST_Y calls and the six-column sort (9 of 33 s for 2M trips), and
-- it writes the keys a job sees for the first time with plain INSERTs (2.2 µs a row here)
-- instead of speculative ON CONFLICT insertions (6.7 µs): under generated data most keys of a
-- job are new. The rollups of concurrent jobs are applied one after the other (a transaction
-- advisory lock), which is what makes the plain INSERT of "new" keys safe.

-- The rollup phases of concurrent jobs (and `trips clusters --rebuild`) queue on this lock.
CREATE FUNCTION trip_rollups_lock() RETURNS void
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(7295104473361) $$;

-- false (and nothing done) when the grids given are not the stored ones: the caller then
-- computes the rollups server-side with apply_trip_rollups.
CREATE FUNCTION apply_staged_rollups(p_grid double precision, p_cell double precision,
                                     p_bucket_minutes integer) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM trip_rollups_lock();
    -- FOR SHARE: a `trips clusters --rebuild` (which updates this row) waits for this job.
    IF NOT EXISTS (SELECT 1 FROM trip_cluster_params
                   WHERE cell = p_cell AND bucket_minutes = p_bucket_minutes FOR SHARE)
       OR NOT EXISTS (SELECT 1 FROM rollup_grid WHERE cell = p_grid) THEN
        RETURN false;
    END IF;
    SET LOCAL work_mem = '256MB';

    INSERT INTO weekly_trips AS w (region_id, week, datasource_id, trips, last_at)
    SELECT region_id, week, datasource_id, trips, last_at FROM stage_weekly
    ON CONFLICT (region_id, week, datasource_id) DO UPDATE
    SET trips = w.trips + EXCLUDED.trips, last_at = greatest(w.last_at, EXCLUDED.last_at);

    UPDATE weekly_cell_trips w SET trips = w.trips + j.trips
    FROM stage_cells j
    WHERE (w.side, w.cx, w.cy, w.week, w.region_id) = (j.side, j.cx, j.cy, j.week, j.region_id);
    INSERT INTO weekly_cell_trips (side, cx, cy, week, region_id, trips)
    SELECT * FROM stage_cells j
    WHERE NOT EXISTS (SELECT 1 FROM weekly_cell_trips w
                      WHERE (w.side, w.cx, w.cy, w.week, w.region_id)
                          = (j.side, j.cx, j.cy, j.week, j.region_id));

    -- Each region's current N-th count: a touched cluster below it cannot enter the top.
    CREATE TEMP TABLE job_top_threshold ON COMMIT DROP AS
    SELECT r.id AS region_id, coalesce(t.t, 0) AS t
    FROM regions r LEFT JOIN (
        SELECT region_id,
               CASE WHEN count(*) < trip_cluster_top_size() THEN 0 ELSE min(trips) END AS t
        FROM trip_cluster_top GROUP BY region_id) t ON t.region_id = r.id;
    ANALYZE job_top_threshold;
    -- The new totals of the touched clusters that may enter their region's top: the clusters
    -- already stored that reach the threshold, and those of the job's first clusters of each
    -- region (stage_top, chosen by the loader) that reach it. A cluster new to the store has the
    -- job's count as its total, so one outside the job's first N of its region is beaten by N
    -- others and cannot enter the top.
    CREATE TEMP TABLE job_touched (LIKE trip_clusters) ON COMMIT DROP;
    ALTER TABLE job_touched ADD PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket);
    WITH up AS (
        UPDATE trip_clusters c
        SET trips = c.trips + j.trips, sum_ox = c.sum_ox + j.sum_ox, sum_oy = c.sum_oy + j.sum_oy,
            sum_dx = c.sum_dx + j.sum_dx, sum_dy = c.sum_dy + j.sum_dy
        FROM stage_clusters j
        WHERE (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
            = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket)
        RETURNING c.*
    )
    INSERT INTO job_touched
    SELECT up.* FROM up JOIN job_top_threshold h USING (region_id) WHERE up.trips >= h.t;
    INSERT INTO trip_clusters
    SELECT * FROM stage_clusters j
    WHERE NOT EXISTS (SELECT 1 FROM trip_clusters c
                      WHERE (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
                          = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket));
    INSERT INTO job_touched
    SELECT c.* FROM stage_top j
    JOIN trip_clusters c ON (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
                          = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket)
    JOIN job_top_threshold h ON h.region_id = c.region_id
    WHERE c.trips >= h.t
    ON CONFLICT DO NOTHING;

    -- Counts only grow: the new top of a region is the top of (old top ∪ touched clusters) (011).
    WITH best AS (
        SELECT b.* FROM (SELECT DISTINCT region_id FROM job_touched) r
        CROSS JOIN LATERAL (
            SELECT * FROM job_touched u WHERE u.region_id = r.region_id
            ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket
            LIMIT trip_cluster_top_size()) b
    )
    INSERT INTO trip_cluster_top AS t
    SELECT * FROM best ORDER BY region_id, ocx, ocy, dcx, dcy, bucket
    ON CONFLICT (region_id, ocx, ocy, dcx, dcy, bucket) DO UPDATE
    SET trips = EXCLUDED.trips, sum_ox = EXCLUDED.sum_ox, sum_oy = EXCLUDED.sum_oy,
        sum_dx = EXCLUDED.sum_dx, sum_dy = EXCLUDED.sum_dy;

    DELETE FROM trip_cluster_top c
    USING (SELECT region_id, ocx, ocy, dcx, dcy, bucket,
                  row_number() OVER (PARTITION BY region_id
                                     ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
           FROM trip_cluster_top) r
    WHERE r.rn > trip_cluster_top_size()
      AND (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
        = (r.region_id, r.ocx, r.ocy, r.dcx, r.dcy, r.bucket);

    DROP TABLE job_top_threshold, job_touched;
    RETURN true;
END
$fn$;

-- The server-side path (a job whose grids changed under it) and the rebuild queue on the same
-- lock, so that a plain INSERT of a job's new keys never races another job's.
CREATE OR REPLACE FUNCTION rebuild_trip_clusters(p_cell double precision, p_bucket_minutes integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    PERFORM trip_rollups_lock();
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
