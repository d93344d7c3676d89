-- The rollup merge of a large job at 100M trips (018 made it one hash join over the stored
-- rollup): what it still spent, measured with auto_explain on the 100M store for an 11th 10M job
-- (86.7 s of merge in all):
--
--   * 1.9 s twice counting the job's staged keys for rollup_join_plan;
--   * the cluster UPDATE's hash join, 65 s: its hash of the job's 4.58M keys spilled to disk at
--     work_mem = 256MB (1.7 GB of temporary files written and read back), and it read 5.3 GB of
--     stored clusters, about 45% of it dead rows;
--   * those dead rows are the keys each earlier job found stored: they were copied into the
--     job's new partition and then deleted from it (6.8 s for 2.06M keys here). A cell-week
--     partition of a later job keeps a few hundred of its 622k rows: 60 MB of dead pages each,
--     read by every later merge (the cell UPDATE, 5.5 s, read 75k pages for 627k live rows).
--
-- So: the staged keys are estimated by the planner (EXPLAIN, no scan); a hash join over the
-- store gets work_mem = 1GB (the hash of a 10M-trip job's cluster keys, ~0.6 GB, stays in
-- memory); and when a large part of the staged keys was found stored, the new partition is
-- rewritten with only the new keys (INSERT of the anti-join into a table created in this
-- transaction: no WAL under wal_level = minimal) instead of deleting the found ones.

CREATE OR REPLACE FUNCTION rollup_join_plan(p_parent regclass, p_stage regclass) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    plan json;
    job_keys double precision;
    stored double precision;
    parts integer;
    scan boolean;
    knob text;
BEGIN
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT * FROM %s', p_stage) INTO plan;
    job_keys := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
    SELECT coalesce(sum(greatest(c.reltuples, 0)), 0), count(*) INTO stored, parts
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = p_parent;
    scan := stored * 0.85 < job_keys * greatest(parts, 1) * 3.4;
    FOREACH knob IN ARRAY '{enable_nestloop, enable_mergejoin, enable_indexscan,
                            enable_indexonlyscan, enable_bitmapscan}'::text[] LOOP
        PERFORM set_config(knob, CASE WHEN scan THEN 'off' ELSE 'on' END, true);
    END LOOP;
    IF scan THEN
        PERFORM set_config('work_mem', '1GB', true);
    END IF;
    RETURN scan;
END
$fn$;

CREATE OR REPLACE FUNCTION rollup_store_new_keys(p_parent regclass, p_stage regclass,
                                                 p_seen regclass, p_keys text[],
                                                 p_part integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    jk text := (SELECT string_agg('j.' || quote_ident(k), ', ') FROM unnest(p_keys) k);
    sk text := (SELECT string_agg('s.' || quote_ident(k), ', ') FROM unnest(p_keys) k);
    anti text;
    plan json;
    staged double precision;
    seen double precision;
    name text;
    dense text;
BEGIN
    anti := format('SELECT * FROM %s j WHERE NOT EXISTS (SELECT 1 FROM %s s WHERE (%s) = (%s))',
                   p_stage, p_seen, sk, jk);
    IF p_part = 0 THEN
        EXECUTE format('INSERT INTO %s %s', p_parent, anti);
        RETURN;
    END IF;
    SELECT relname INTO name FROM pg_class WHERE oid = p_stage;
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT * FROM %s', p_stage) INTO plan;
    staged := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
    SELECT greatest(reltuples, 0) INTO seen FROM pg_class WHERE oid = p_seen;  -- analysed
    IF seen * 4 < staged THEN
        EXECUTE format('DELETE FROM %s j USING %s s WHERE (%s) = (%s)', p_stage, p_seen, jk, sk);
    ELSE
        dense := name || '_dense';
        EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS) %s',
                       dense, p_stage,
                       (SELECT coalesce('WITH (' || array_to_string(reloptions, ', ') || ')', '')
                        FROM pg_class WHERE oid = p_stage));
        EXECUTE format('INSERT INTO %I %s', dense, anti);
        EXECUTE format('DROP TABLE %s', p_stage);
        EXECUTE format('ALTER TABLE %I RENAME TO %I', dense, name);
    END IF;
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s, part)', name,
                   (SELECT string_agg(quote_ident(k), ', ') FROM unnest(p_keys) k));
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES IN (%s)',
                   p_parent, name, p_part);
    EXECUTE format('ANALYZE %I', name);
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
    SET LOCAL work_mem = '256MB';
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
