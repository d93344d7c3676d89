-- A random identity of this database, one row. The columnar copies of large jobs' raw points
-- (service/analytics/columns.py), kept on the API host's disk outside PostgreSQL, are filed
-- under it: a database dropped and created again, or a cluster made anew, whose tables may
-- reuse an old table's oid, never finds an old copy. No privilege beyond reading this table is
-- needed (pg_control_system() would give the cluster's identifier to privileged roles only).
CREATE TABLE store_identity (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    one boolean NOT NULL DEFAULT true UNIQUE CHECK (one)
);
INSERT INTO store_identity DEFAULT VALUES;
