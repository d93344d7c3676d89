-- The rollups weekly_cell_trips and trip_clusters partitioned like `trips`: the keys a large job
-- sees for the first time go into a partition of their own, created in the job's transaction.
--
-- Inserting a job's new keys one by one into the shared tables was the longest step of a large
-- ingestion: for a 2M-trip file into an empty store, 1.31M cluster keys took 5.4 s and 505k cell
-- keys 2.9 s (INSERT ... SELECT: a WAL-logged heap insert and a B-tree insertion per key). Into a
-- table created in the same transaction the heap is not WAL-logged (wal_level = minimal, the local
-- cluster's setting) and the primary key is built once, sorted, after the rows are in: 2.1 s and
-- 0.7 s for the same keys. With wal_level = replica only the index build is saved.
--
-- A key lives in exactly one partition: the job's merge first adds its totals to the keys stored
-- in any partition (UPDATE through the parent), and only the keys it did not find are new. Jobs
-- merge one after the other (trip_rollups_lock), so no two partitions ever get the same key. The
-- primary keys include `part` because PostgreSQL requires the partition key in a partitioned
-- table's unique indexes; the uniqueness of the rollup key itself is this merge's invariant, and
-- tests/integration/test_rollups_exact.py checks it. Partition 0 holds the keys of small jobs and
-- of the server-side path (apply_trip_rollups), inserted one by one as before.

ALTER TABLE weekly_cell_trips RENAME TO weekly_cell_trips_p0;
ALTER TABLE weekly_cell_trips_p0 DROP CONSTRAINT weekly_cell_trips_pkey;
ALTER TABLE weekly_cell_trips_p0 ADD COLUMN part integer NOT NULL DEFAULT 0;
ALTER TABLE weekly_cell_trips_p0 ADD CONSTRAINT weekly_cell_trips_p0_pkey
    PRIMARY KEY (side, cx, cy, week, region_id, part);
CREATE TABLE weekly_cell_trips (LIKE weekly_cell_trips_p0 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY LIST (part);
ALTER TABLE weekly_cell_trips ADD PRIMARY KEY (side, cx, cy, week, region_id, part);
ALTER TABLE weekly_cell_trips ATTACH PARTITION weekly_cell_trips_p0 FOR VALUES IN (0);

ALTER TABLE trip_clusters RENAME TO trip_clusters_p0;
ALTER TABLE trip_clusters_p0 DROP CONSTRAINT trip_clusters_pkey;
ALTER TABLE trip_clusters_p0 ADD COLUMN part integer NOT NULL DEFAULT 0;
ALTER TABLE trip_clusters_p0 ADD CONSTRAINT trip_clusters_p0_pkey
    PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket, part);
CREATE TABLE trip_clusters (LIKE trip_clusters_p0 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY LIST (part);
ALTER TABLE trip_clusters ADD PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket, part);
ALTER TABLE trip_clusters ATTACH PARTITION trip_clusters_p0 FOR VALUES IN (0);

-- The keys of stage table `p_stage` that the merge did not find stored (`p_seen`) become stored
-- keys of partition `p_part`. Partition 0: inserted into partition 0 (p_stage is a temporary
-- table with the parent's columns). Otherwise p_stage is the job's new partition, created by the
-- loader in this transaction with `part` defaulting to p_part and CHECK (part = p_part): the keys
-- found are deleted from it, its primary key is built, and it is attached.
CREATE FUNCTION rollup_store_new_keys(p_parent regclass, p_stage regclass, p_seen regclass,
                                      p_keys text[], p_part integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    jk text := (SELECT string_agg('j.' || quote_ident(k), ', ') FROM unnest(p_keys) k);
    sk text := (SELECT string_agg('s.' || quote_ident(k), ', ') FROM unnest(p_keys) k);
BEGIN
    IF p_part = 0 THEN
        EXECUTE format('INSERT INTO %s SELECT * FROM %s j WHERE NOT EXISTS '
                       '(SELECT 1 FROM %s s WHERE (%s) = (%s))', p_parent, p_stage, p_seen, sk, jk);
        RETURN;
    END IF;
    EXECUTE format('DELETE FROM %s j USING %s s WHERE (%s) = (%s)', p_stage, p_seen, jk, sk);
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (%s, part)', p_stage,
                   (SELECT string_agg(quote_ident(k), ', ') FROM unnest(p_keys) k));
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES IN (%s)',
                   p_parent, p_stage, p_part);
    EXECUTE format('ANALYZE %s', p_stage);
END
$fn$;

DROP FUNCTION apply_staged_rollups(double precision, double precision, integer);

-- apply_staged_rollups (013, 015) with the job's partition: stage_weekly and stage_top are
-- temporary tables; the cell and cluster totals are in p_cells and p_clusters (see
-- rollup_store_new_keys). false (and nothing done) when the grids given are not the stored ones.
CREATE FUNCTION apply_staged_rollups(p_grid double precision, p_cell double precision,
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

    -- A large job's totals meet the stored keys in hash joins (the UPDATEs, and the DELETEs of
    -- rollup_store_new_keys): probing every partition's primary key for each of a job's keys
    -- costs (keys x partitions) index descents (3.3 s for the 1.31M cluster keys of a 2M-trip
    -- job against one empty partition), a hash join one pass. A small job's few keys are left
    -- to the planner (index probes beat reading the rollup). The new partitions are analysed
    -- once attached, not before.
    IF p_part <> 0 THEN
        SET LOCAL enable_nestloop = off;
        SET LOCAL enable_mergejoin = off;
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
        CASE WHEN p_part = 0 THEN 'trip_clusters'::regclass ELSE p_clusters END);

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

-- The server-side path (a job whose grids changed during its load): the job's totals aggregated
-- in SQL into the same staging tables, then the same merge, into partition 0.
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

-- `trips clusters --rebuild`: the job partitions of trip_clusters are dropped and every cluster
-- is recomputed into partition 0.
CREATE OR REPLACE FUNCTION rebuild_trip_clusters(p_cell double precision, p_bucket_minutes integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
    child regclass;
BEGIN
    PERFORM trip_rollups_lock();
    UPDATE trip_cluster_params SET cell = p_cell, bucket_minutes = p_bucket_minutes;
    LOCK TABLE trip_clusters, trip_cluster_top IN ACCESS EXCLUSIVE MODE;
    FOR child IN SELECT inhrelid::regclass FROM pg_inherits
                 WHERE inhparent = 'trip_clusters'::regclass
                   AND inhrelid <> 'trip_clusters_p0'::regclass LOOP
        EXECUTE format('DROP TABLE %s', child);
    END LOOP;
    TRUNCATE trip_clusters_p0, trip_cluster_top;
    INSERT INTO trip_clusters
        (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
    SELECT region_id, floor(ox / p_cell)::int, floor(oy / p_cell)::int,
           floor(dx / p_cell)::int, floor(dy / p_cell)::int,
           floor(date_part('epoch', started_at::time) / (p_bucket_minutes * 60))::int,
           count(*), sum(ox), sum(oy), sum(dx), sum(dy)
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
