-- apply_staged_rollups (013) without its two anti-joins against whole rollups. The INSERT of a
-- job's new keys tested each staged key against the stored table: on a store of 10M trips a
-- merge anti-join read all 5.2M keys of trip_clusters' primary key (1.5 of 4.1 s), a cost that
-- grows with the store. The UPDATE that adds the job's totals to the stored keys already finds
-- which staged keys exist: its RETURNING keeps them in a temporary table, and the INSERT tests
-- the staged keys against that (hashed), whatever the size of the store.
CREATE OR REPLACE FUNCTION apply_staged_rollups(p_grid double precision, p_cell double precision,
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

    -- The keys the UPDATE found are the job's keys already stored: the INSERT of the others
    -- tests the job's keys against those (hashed) instead of against the whole rollup.
    CREATE TEMP TABLE job_cells_seen ON COMMIT DROP AS
    WITH up AS (
        UPDATE weekly_cell_trips w SET trips = w.trips + j.trips
        FROM stage_cells j
        WHERE (w.side, w.cx, w.cy, w.week, w.region_id) = (j.side, j.cx, j.cy, j.week, j.region_id)
        RETURNING w.side, w.cx, w.cy, w.week, w.region_id
    )
    SELECT * FROM up;
    ANALYZE job_cells_seen;
    INSERT INTO weekly_cell_trips (side, cx, cy, week, region_id, trips)
    SELECT * FROM stage_cells j
    WHERE NOT EXISTS (SELECT 1 FROM job_cells_seen w
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
    CREATE TEMP TABLE job_clusters_seen ON COMMIT DROP AS
    WITH up AS (
        UPDATE trip_clusters c
        SET trips = c.trips + j.trips, sum_ox = c.sum_ox + j.sum_ox, sum_oy = c.sum_oy + j.sum_oy,
            sum_dx = c.sum_dx + j.sum_dx, sum_dy = c.sum_dy + j.sum_dy
        FROM stage_clusters j
        WHERE (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
            = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket)
        RETURNING c.*
    )
    SELECT * FROM up;
    ANALYZE job_clusters_seen;
    INSERT INTO job_touched
    SELECT u.* FROM job_clusters_seen u JOIN job_top_threshold h USING (region_id)
    WHERE u.trips >= h.t;
    INSERT INTO trip_clusters
    SELECT * FROM stage_clusters j
    WHERE NOT EXISTS (SELECT 1 FROM job_clusters_seen c
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

    DROP TABLE job_top_threshold, job_touched, job_cells_seen, job_clusters_seen;
    RETURN true;
END
$fn$;

