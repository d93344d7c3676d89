-- Append-only cluster totals: a large job's cluster totals are stored as they are, in a partition
-- of their own, and a cluster's total is the sum over the partitions, read through the view
-- `trip_clusters`. The exact top of each region (trip_cluster_top) is kept without reading the
-- store.
--
-- Until now a job added its totals to the keys already stored, in place (013, 017, 018, 019):
-- one UPDATE joining the job's keys with every stored cluster. At 100M trips that UPDATE was
-- most of a later job's merge: 61-66 s for an 11th 10M-row job against 37M stored clusters,
-- ~1.7 us per stored cluster per job (benchmarks/README.md, "Where the time goes at 100M"), so
-- every job was slower than the one before and the 100M ingest rate stayed at 0.135-0.151 of a
-- raw COPY. Now a large job's merge does not depend on the clusters stored before it:
--
--   * trip_cluster_parts (the former partitioned table trip_clusters) holds per partition one
--     row per key: partition 0 the small jobs' totals (upserted), partition N the totals of
--     large job N (its own keys only, never updated). A key may be in several partitions.
--   * trip_clusters is a view: one row per cluster, the sums over the partitions, exact for the
--     counts. The coordinate sums are float8 sums taken in another order than before, so a mean
--     may differ from an in-place sum in its last bits.
--   * compact_trip_clusters() folds every partition into partition 0 (`trips clusters
--     --compact`; `trips serve` runs it once the partitions pass TRIPS_CLUSTER_COMPACT_PARTS).
--
-- The top of each region without reading the store (merge_trip_cluster_top): a region's
-- clusters are split by a bound B into the known ones (trip_cluster_known: more than B trips,
-- totals exact) and the others (at most B trips each). After a job:
--
--   * the known clusters the job has get its totals added;
--   * of the job's other clusters, the `admit` (20,000) per region with the largest job counts
--     (more than delta) become known: their totals are summed over the partitions (index
--     probes). The rest had at most B trips and got at most delta: B becomes B + delta;
--   * known clusters with at most the new B trips are let go;
--   * the top is the first N known clusters, which holds while a region has N of them. When one
--     has fewer (B caught up with its top), everything is counted again
--     (reset_trip_cluster_known, one streaming pass over the partitions): the clusters above an
--     eighth of the region's N-th count become the known ones (at most 100,000 per region),
--     and that eighth (or the count of the first one left out) the new B. A rebuild also
--     counts everything again.
--
-- A lighter rule was tried first and measured: with only the top known (B = its N-th count),
-- an untouched cluster at the bottom of the top keeps the new N-th count at B, every cluster of
-- the job may enter. Two more 10M-row jobs into the 100M store with that rule: merges of 72 s
-- and 103 s (the second looked up all its 4.6M keys, 73 s of it), against 94 s for the job
-- before them, which updated in place.

ALTER TABLE trip_clusters RENAME TO trip_cluster_parts;
ALTER INDEX trip_clusters_pkey RENAME TO trip_cluster_parts_pkey;
ALTER TABLE trip_clusters_p0 RENAME TO trip_cluster_parts_p0;
ALTER INDEX trip_clusters_p0_pkey RENAME TO trip_cluster_parts_p0_pkey;
DO $do$
DECLARE
    child text;
BEGIN
    FOR child IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'trip_cluster_parts'::regclass
                   AND c.relname LIKE 'trip\_clusters\_job\_%' LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', child,
                       'trip_cluster_parts_job_' || substr(child, length('trip_clusters_job_') + 1));
    END LOOP;
END
$do$;

CREATE VIEW trip_clusters AS
SELECT region_id, ocx, ocy, dcx, dcy, bucket, sum(trips)::bigint AS trips,
       sum(sum_ox) AS sum_ox, sum(sum_oy) AS sum_oy, sum(sum_dx) AS sum_dx, sum(sum_dy) AS sum_dy
FROM trip_cluster_parts
GROUP BY region_id, ocx, ocy, dcx, dcy, bucket;

-- The clusters whose totals are known exactly without reading the store: per region, every
-- cluster outside trip_cluster_known has at most trip_cluster_bound.bound trips, and every one
-- inside has more (db/migrations/025). The top is then the first N known clusters, as long as a
-- region has N of them (or a bound of 0: then every cluster it has is known).
CREATE TABLE trip_cluster_known (LIKE trip_cluster_top INCLUDING ALL);
CREATE TABLE trip_cluster_bound (
    region_id integer PRIMARY KEY,
    bound bigint NOT NULL CHECK (bound >= 0)
);

-- At most this many clusters per region are kept known after a full count; at most this many
-- per region and job are admitted (their totals looked up: the job's largest counts outside the
-- known ones).
CREATE FUNCTION trip_cluster_known_size() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 100000';
CREATE FUNCTION trip_cluster_admit_size() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 20000';

-- A full count. Every cluster's total is summed over the partitions in one streaming pass: a
-- merge of the partitions' primary keys, grouped as it goes, no hash table and no sort of the
-- store (41 s for 50M rows at 130M trips, against 3.5 min hashed and sorted). Only totals above
-- an eighth of the region's current N-th count are kept: the top's clusters are among them
-- (counts only grow), and they become the known ones, at most trip_cluster_known_size() per
-- region; the bound is that eighth, or the count of the first cluster left out.
CREATE FUNCTION reset_trip_cluster_known() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    m integer := trip_cluster_known_size();
    top_n integer := trip_cluster_top_size();
BEGIN
    SET LOCAL work_mem = '1GB';
    CREATE TEMP TABLE reset_floor ON COMMIT DROP AS
    SELECT region_id, CASE WHEN count(*) >= top_n THEN min(trips) / 8 ELSE 0 END AS lo
    FROM trip_cluster_top GROUP BY region_id;
    SET LOCAL enable_hashagg = off;
    SET LOCAL enable_sort = off;
    CREATE TEMP TABLE reset_totals ON COMMIT DROP AS
    SELECT a.* FROM (
        SELECT region_id, ocx, ocy, dcx, dcy, bucket, sum(trips)::bigint AS trips,
               sum(sum_ox) AS sum_ox, sum(sum_oy) AS sum_oy, sum(sum_dx) AS sum_dx,
               sum(sum_dy) AS sum_dy
        FROM trip_cluster_parts
        GROUP BY region_id, ocx, ocy, dcx, dcy, bucket) a
    LEFT JOIN reset_floor f ON f.region_id = a.region_id
    WHERE a.trips > coalesce(f.lo, 0);
    RESET enable_hashagg;
    RESET enable_sort;
    CREATE TEMP TABLE reset_ranked ON COMMIT DROP AS
    SELECT * FROM (
        SELECT t.*, row_number() OVER (PARTITION BY region_id
                                       ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
        FROM reset_totals t) r
    WHERE rn <= greatest(m, top_n) + 1;
    -- DELETE, not TRUNCATE: readers of the top keep reading the committed one meanwhile (a
    -- TRUNCATE would lock them out until the job commits, its index builds included)
    DELETE FROM trip_cluster_known;
    DELETE FROM trip_cluster_top;
    DELETE FROM trip_cluster_bound;
    INSERT INTO trip_cluster_bound
    SELECT r.region_id,
           greatest(coalesce(max(f.lo), 0), coalesce(max(r.trips) FILTER (WHERE r.rn = m + 1), 0))
    FROM reset_ranked r LEFT JOIN reset_floor f ON f.region_id = r.region_id
    GROUP BY r.region_id;
    INSERT INTO trip_cluster_known
    SELECT r.region_id, r.ocx, r.ocy, r.dcx, r.dcy, r.bucket, r.trips,
           r.sum_ox, r.sum_oy, r.sum_dx, r.sum_dy
    FROM reset_ranked r JOIN trip_cluster_bound b ON b.region_id = r.region_id
    WHERE r.rn <= m AND r.trips > b.bound;
    INSERT INTO trip_cluster_top
    SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy
    FROM reset_ranked WHERE rn <= top_n
    ORDER BY region_id, ocx, ocy, dcx, dcy, bucket;
    DROP TABLE reset_floor, reset_totals, reset_ranked;
    ANALYZE trip_cluster_known;
END
$fn$;

-- What rollup_join_plan (018, 019) set for the rest of a merge's transaction, undone: the plan
-- knobs back to the session's, and work_mem back to the merge's 256MB from a store-wide hash
-- join's 1GB.
CREATE FUNCTION rollup_join_reset() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    RESET enable_nestloop;
    RESET enable_mergejoin;
    RESET enable_indexscan;
    RESET enable_indexonlyscan;
    RESET enable_bitmapscan;
    SET LOCAL work_mem = '256MB';
END
$fn$;

-- The known clusters and the top after the job whose cluster totals are in p_job (its
-- partition, attached, or a small job's staging table; stored already).
CREATE FUNCTION merge_trip_cluster_top(p_job regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    top_n integer := trip_cluster_top_size();
    admit integer := trip_cluster_admit_size();
BEGIN
    -- the known clusters the job has: its totals added
    EXECUTE format($q$
        UPDATE trip_cluster_known s
        SET trips = s.trips + j.trips, sum_ox = s.sum_ox + j.sum_ox,
            sum_oy = s.sum_oy + j.sum_oy, sum_dx = s.sum_dx + j.sum_dx,
            sum_dy = s.sum_dy + j.sum_dy
        FROM %s j
        WHERE (s.region_id, s.ocx, s.ocy, s.dcx, s.dcy, s.bucket)
            = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket)$q$, p_job);
    -- the job's other clusters: how many per region and job count
    EXECUTE format($q$
        CREATE TEMP TABLE job_outside ON COMMIT DROP AS
        SELECT j.region_id, j.trips, count(*) AS n
        FROM %s j
        WHERE NOT EXISTS (SELECT 1 FROM trip_cluster_known s
                          WHERE (s.region_id, s.ocx, s.ocy, s.dcx, s.dcy, s.bucket)
                              = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket))
        GROUP BY j.region_id, j.trips$q$, p_job);
    -- per region, delta: the least job count such that at most `admit` of them have more (0
    -- when all fit). Those with more are admitted: their totals are looked up. The others had
    -- at most `bound` trips and now have at most bound + delta.
    CREATE TEMP TABLE job_delta ON COMMIT DROP AS
    SELECT region_id,
           CASE WHEN max(total) <= admit THEN 0
                ELSE min(trips) FILTER (WHERE above <= admit) END AS delta
    FROM (SELECT region_id, trips,
                 coalesce(sum(n) OVER (PARTITION BY region_id ORDER BY trips DESC
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                     AS above,
                 sum(n) OVER (PARTITION BY region_id) AS total
          FROM job_outside) x
    GROUP BY region_id;
    EXECUTE format($q$
        CREATE TEMP TABLE job_admitted ON COMMIT DROP AS
        SELECT j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket, j.trips,
               j.sum_ox, j.sum_oy, j.sum_dx, j.sum_dy, coalesce(b.bound, 0) AS bound
        FROM %s j
        JOIN job_delta d ON d.region_id = j.region_id
        LEFT JOIN trip_cluster_bound b ON b.region_id = j.region_id
        WHERE j.trips > d.delta
          AND NOT EXISTS (SELECT 1 FROM trip_cluster_known s
                          WHERE (s.region_id, s.ocx, s.ocy, s.dcx, s.dcy, s.bucket)
                              = (j.region_id, j.ocx, j.ocy, j.dcx, j.dcy, j.bucket))$q$, p_job);
    -- bound 0: nothing outside the known clusters was stored, the job's count is the total
    INSERT INTO trip_cluster_known
    SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy
    FROM job_admitted WHERE bound = 0;
    DELETE FROM job_admitted WHERE bound = 0;
    ANALYZE job_admitted;
    PERFORM rollup_join_plan('trip_cluster_parts', 'job_admitted');
    INSERT INTO trip_cluster_known
    SELECT c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket, sum(c.trips)::bigint,
           sum(c.sum_ox), sum(c.sum_oy), sum(c.sum_dx), sum(c.sum_dy)
    FROM job_admitted k
    JOIN trip_cluster_parts c ON (c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket)
                               = (k.region_id, k.ocx, k.ocy, k.dcx, k.dcy, k.bucket)
    GROUP BY c.region_id, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket;
    PERFORM rollup_join_reset();
    INSERT INTO trip_cluster_bound AS b (region_id, bound)
    SELECT region_id, delta FROM job_delta
    ON CONFLICT (region_id) DO UPDATE SET bound = b.bound + EXCLUDED.bound;
    -- known clusters no longer above their region's bound are let go
    DELETE FROM trip_cluster_known s USING trip_cluster_bound b
    WHERE s.region_id = b.region_id AND s.trips <= b.bound;
    DROP TABLE job_outside, job_delta, job_admitted;
    IF EXISTS (SELECT 1 FROM trip_cluster_bound b
               WHERE b.bound > 0
                 AND (SELECT count(*) FROM trip_cluster_known s
                      WHERE s.region_id = b.region_id) < top_n) THEN
        -- a region's known clusters no longer hold its top: count everything again
        PERFORM reset_trip_cluster_known();
        RETURN;
    END IF;
    DELETE FROM trip_cluster_top;
    INSERT INTO trip_cluster_top
    SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy
    FROM (SELECT *, row_number() OVER (PARTITION BY region_id
                                       ORDER BY trips DESC, ocx, ocy, dcx, dcy, bucket) AS rn
          FROM trip_cluster_known) r
    WHERE rn <= top_n
    ORDER BY region_id, ocx, ocy, dcx, dcy, bucket;
END
$fn$;

-- apply_staged_rollups (019) with the cluster totals stored append-only: partition 0 (a small
-- job) takes them by upsert, a large job's staging table p_clusters is its partition.
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

    -- The cells: added in place (019); how a large job's totals meet the stored keys is chosen
    -- by rollup_join_plan.
    IF p_part <> 0 THEN
        PERFORM rollup_join_plan('weekly_cell_trips', p_cells);
    END IF;
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
    PERFORM rollup_join_reset();
    DROP TABLE job_cells_seen;

    -- The clusters: stored as they are.
    IF p_part = 0 THEN
        EXECUTE format($q$
            INSERT INTO trip_cluster_parts_p0 AS c
                (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy,
                 part)
            SELECT region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy,
                   0
            FROM %s
            ORDER BY region_id, ocx, ocy, dcx, dcy, bucket
            ON CONFLICT (region_id, ocx, ocy, dcx, dcy, bucket, part) DO UPDATE
            SET trips = c.trips + EXCLUDED.trips, sum_ox = c.sum_ox + EXCLUDED.sum_ox,
                sum_oy = c.sum_oy + EXCLUDED.sum_oy, sum_dx = c.sum_dx + EXCLUDED.sum_dx,
                sum_dy = c.sum_dy + EXCLUDED.sum_dy$q$, p_clusters);
    ELSE
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY '
                       '(region_id, ocx, ocy, dcx, dcy, bucket, part)', p_clusters);
        EXECUTE format('ALTER TABLE trip_cluster_parts ATTACH PARTITION %s FOR VALUES IN (%s)',
                       p_clusters, p_part);
        EXECUTE format('ANALYZE %s', p_clusters);
    END IF;
    PERFORM merge_trip_cluster_top(p_clusters);
    RETURN true;
END
$fn$;

-- The server-side path (022) with the staging table like trip_cluster_parts, and no stage_top
-- (merge_trip_cluster_top does not need the job's first clusters).
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
    CREATE TEMP TABLE stage_clusters (LIKE trip_cluster_parts INCLUDING DEFAULTS) ON COMMIT DROP;
    EXECUTE format($q$
        INSERT INTO stage_clusters
            (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy)
        SELECT region_id, floor(ox / $1)::int, floor(oy / $1)::int,
               floor(dx / $1)::int, floor(dy / $1)::int,
               floor(date_part('epoch', started_at::time) / ($2 * 60))::int,
               count(*), sum(ox), sum(oy), sum(dx), sum(dy)
        FROM %s GROUP BY 1, 2, 3, 4, 5, 6$q$, src) USING cc, bm;
    ANALYZE stage_clusters;
    PERFORM apply_staged_rollups(g, cc, bm, 0, 'stage_cells', 'stage_clusters');
    DROP TABLE stage_weekly, stage_cells, stage_clusters;
END
$fn$;

-- `trips clusters --rebuild` (017) on trip_cluster_parts: the job partitions are dropped and
-- every cluster is recomputed into partition 0.
CREATE OR REPLACE FUNCTION rebuild_trip_clusters(p_cell double precision, p_bucket_minutes integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
    child regclass;
BEGIN
    PERFORM trip_rollups_lock();
    UPDATE trip_cluster_params SET cell = p_cell, bucket_minutes = p_bucket_minutes;
    LOCK TABLE trip_cluster_parts, trip_cluster_top IN ACCESS EXCLUSIVE MODE;
    FOR child IN SELECT inhrelid::regclass FROM pg_inherits
                 WHERE inhparent = 'trip_cluster_parts'::regclass
                   AND inhrelid <> 'trip_cluster_parts_p0'::regclass LOOP
        EXECUTE format('DROP TABLE %s', child);
    END LOOP;
    TRUNCATE trip_cluster_parts_p0, trip_cluster_top;
    INSERT INTO trip_cluster_parts_p0
        (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy, part)
    SELECT region_id, floor(ox / p_cell)::int, floor(oy / p_cell)::int,
           floor(dx / p_cell)::int, floor(dy / p_cell)::int,
           floor(date_part('epoch', started_at::time) / (p_bucket_minutes * 60))::int,
           count(*), sum(ox), sum(oy), sum(dx), sum(dy), 0
    FROM trips GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM reset_trip_cluster_known();
    RETURN n;
END
$fn$;

-- Every partition of trip_cluster_parts folded into a new partition 0, one row per cluster;
-- returns the number of partitions folded (0 when there was one). The totals, and so
-- trip_cluster_top and the known clusters with their bound, do not change. The new partition is written beside the old ones (readers
-- go on reading them); the swap at the end holds an exclusive lock on trip_cluster_parts for a
-- moment.
CREATE FUNCTION compact_trip_clusters() RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    parts integer;
    child regclass;
BEGIN
    PERFORM trip_rollups_lock();
    SELECT count(*) INTO parts FROM pg_inherits WHERE inhparent = 'trip_cluster_parts'::regclass;
    IF parts <= 1 THEN
        RETURN 0;
    END IF;
    SET LOCAL work_mem = '1GB';
    DROP TABLE IF EXISTS trip_cluster_parts_compact;
    CREATE TABLE trip_cluster_parts_compact
        (LIKE trip_cluster_parts INCLUDING DEFAULTS, CHECK (part = 0)) WITH (fillfactor = 85);
    INSERT INTO trip_cluster_parts_compact
        (region_id, ocx, ocy, dcx, dcy, bucket, trips, sum_ox, sum_oy, sum_dx, sum_dy, part)
    SELECT region_id, ocx, ocy, dcx, dcy, bucket, sum(trips)::bigint, sum(sum_ox), sum(sum_oy),
           sum(sum_dx), sum(sum_dy), 0
    FROM trip_cluster_parts
    GROUP BY region_id, ocx, ocy, dcx, dcy, bucket
    ORDER BY region_id, ocx, ocy, dcx, dcy, bucket;
    ALTER TABLE trip_cluster_parts_compact
        ADD CONSTRAINT trip_cluster_parts_compact_pkey
        PRIMARY KEY (region_id, ocx, ocy, dcx, dcy, bucket, part);
    LOCK TABLE trip_cluster_parts IN ACCESS EXCLUSIVE MODE;
    FOR child IN SELECT inhrelid::regclass FROM pg_inherits
                 WHERE inhparent = 'trip_cluster_parts'::regclass LOOP
        EXECUTE format('DROP TABLE %s', child);
    END LOOP;
    ALTER TABLE trip_cluster_parts_compact RENAME TO trip_cluster_parts_p0;
    ALTER INDEX trip_cluster_parts_compact_pkey RENAME TO trip_cluster_parts_p0_pkey;
    ALTER TABLE trip_cluster_parts ATTACH PARTITION trip_cluster_parts_p0 FOR VALUES IN (0);
    ANALYZE trip_cluster_parts_p0;
    RETURN parts;
END
$fn$;

-- the known clusters of a store migrated with clusters already counted
SELECT reset_trip_cluster_known();
