-- How a large job's rollup totals meet the stored keys (017), chosen by the store's shape.
--
-- 017 turned nested loops off for a large job's merge so that its totals would meet the stored
-- keys in hash joins. At 100M trips that stopped working: the planner estimates a hash join on the
-- six-column cluster key from each column's own statistics (a few hundred distinct values each)
-- and prices it above even a disabled nested loop (1.6e10 against 1.0e10), so every key of a
-- 10M-trip job was looked up in the primary key of each of the 11 stored partitions: 190 s of
-- the job's 236 s, and the reason the 100M run's files slowed from 61 s to 231 s each
-- (benchmarks/results/2026-12-02T2258-100000000.*). The same join done as one pass over the
-- stored rollup (a hash of the job's 4.5M keys, 37M stored keys read) took 31 s.
--
-- rollup_join_plan compares the two costs with per-row figures measured on this machine
-- (~3.4 us per index descent, ~0.85 us per stored row read and probed) and sets the plan's knobs
-- for the next statement of this transaction: index probes (planner's choice) when the job's
-- keys times the partitions to probe cost less than reading the stored rows, otherwise a hash
-- join over sequential scans (index paths off). apply_staged_rollups resets them.
CREATE FUNCTION rollup_join_plan(p_parent regclass, p_stage regclass) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    job_keys bigint;
    stored double precision;
    parts integer;
    scan boolean;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', p_stage) INTO job_keys;
    SELECT coalesce(sum(greatest(c.reltuples, 0)), 0), count(*) INTO stored, parts
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = p_parent;
    scan := stored * 0.85 < job_keys * greatest(parts, 1) * 3.4;
    PERFORM set_config('enable_nestloop', CASE WHEN scan THEN 'off' ELSE 'on' END, true);
    PERFORM set_config('enable_mergejoin', CASE WHEN scan THEN 'off' ELSE 'on' END, true);
    PERFORM set_config('enable_indexscan', CASE WHEN scan THEN 'off' ELSE 'on' END, true);
    PERFORM set_config('enable_indexonlyscan', CASE WHEN scan THEN 'off' ELSE 'on' END, true);
    PERFORM set_config('enable_bitmapscan', CASE WHEN scan THEN 'off' ELSE 'on' END, true);
    RETURN scan;
END
$fn$;

CREATE OR REPLACE FUNCTION apply_staged_rollups(p_grid double precision, p_cell double precision,
                                     p_bucket_minutes integer, p_part integer,
                                     p_cells regclass, p_clusters regclass) RETURNS boolean
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

    -- How a large job's totals meet the stored keys is chosen per rollup by rollup_join_plan.
    -- A small job's few keys are left to the planner (index probes beat reading the rollup).
    -- The new partitions are analysed once attached, not before.
    IF p_part <> 0 THEN
        PERFORM rollup_join_plan('weekly_cell_trips', p_cells);
    END IF;

    -- The keys the UPDATE found are the job's keys already stored (015).
    EXECUTE format($q$
        CREATE TEMP TABLE job_cells_seen ON COMMIT DROP AS
        WITH up AS (
            UPDATE weekly_cell_trips w SET trips = w.trips + j.trips
            FROM %s j
            WHERE (w.side, w.cx, w.cy, w.week, w.region_id)
                = (j.side, j.cx, j.cy, j.week, j.region_id)
            RETURNING w.side, w.cx, w.cy, w.week, w.region_id
        )
        SELECT * FROM up$q$, p_cells);
    ANALYZE job_cells_seen;
    PERFORM rollup_store_new_keys('weekly_cell_trips', p_cells, 'job_cells_seen',
                                  '{side, cx, cy, week, region_id}', p_part);

    -- Each region's current N-th count: a touched cluster below it cannot enter the top.
    CREATE TEMP TABLE job_top_threshold ON COMMIT DROP AS
    SELECT r.id AS region_id, coalesce(t.t, 0) AS t
    FROM regions r LEFT JOIN (
        SELECT region_id,
               CASE WHEN count(*) < trip_cluster_top_size() THEN 0 ELSE min(trips) END AS t
        FROM trip_cluster_top GROUP BY region_id) t ON t.region_id = r.id;
    ANALYZE job_top_threshold;
    CREATE TEMP TABLE job_touched (LIKE trip_cluster_top) ON COMMIT DROP;
    ALTER TABLE job_touched ADD PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket);
    IF p_part <> 0 THEN
        PERFORM rollup_join_plan('trip_clusters', p_clusters);
    END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE job_clusters_seen ON COMMIT DROP AS
        WITH up AS (
            UPDATE trip_clusters c
            SET trips = c.trips + j.trips, sum_ox = c.sum_ox + j.sum_ox,
                sum_oy = c.sum_oy + j.sum_oy, sum_dx = c.sum_dx + j.sum_dx,
                sum_dy = c.sum_dy + j.sum_dy
            FROM %s j
            WHERE (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
                = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket)
            RETURNING c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, c.trips,
                      c.sum_ox, c.sum_oy, c.sum_dx, c.sum_dy
        )
        SELECT * FROM up$q$, p_clusters);
    ANALYZE job_clusters_seen;
    INSERT INTO job_touched
    SELECT u.* FROM job_clusters_seen u JOIN job_top_threshold h USING (region_id)
    WHERE u.trips >= h.t;
    PERFORM rollup_store_new_keys('trip_clusters', p_clusters, 'job_clusters_seen',
                                  '{region_id, ocx, ocy, dcx, dcy, bucket}', p_part);
    RESET enable_nestloop;
    RESET enable_mergejoin;
    RESET enable_indexscan;
    RESET enable_indexonlyscan;
    RESET enable_bitmapscan;
    SET LOCAL work_mem = '256MB';  -- back from a store-wide hash join's 1GB (019)
    -- The job's first clusters of each region (stage_top, chosen by the loader) with their
    -- stored totals: a cluster new to the store has the job's count as its total, and one
    -- outside the job's first N of its region is beaten by N others and cannot enter the top.
    -- A large job's new keys are all in its new partition (one index probe each); a small
    -- job's are looked up through the parent (one probe per partition). Keys already in
    -- job_touched (found by the UPDATE) are skipped by the ON CONFLICT.
    EXECUTE format($q$
        INSERT INTO job_touched
        SELECT c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, c.trips,
               c.sum_ox, c.sum_oy, c.sum_dx, c.sum_dy
        FROM stage_top j
        JOIN %s c ON (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
                   = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket)
        JOIN job_top_threshold h ON h.region_id = c.region_id
        WHERE c.trips >= h.t
        ON CONFLICT DO NOTHING$q$,
        -- by name: the partition may be a rewrite of p_clusters (019)
        CASE WHEN p_part = 0 THEN 'trip_clusters'::regclass
             ELSE format('%I', 'trip_clusters_job_' || p_part)::regclass END);

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
