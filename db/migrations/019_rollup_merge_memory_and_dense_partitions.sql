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
-- transaction: no WAL under wal_level = minimal) instead of deleting the found ones. The
-- rewritten partition is a new table, so apply_staged_rollups (018) finds it by name.

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
