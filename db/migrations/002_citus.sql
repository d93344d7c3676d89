-- Citus (docs/scaling.md "2. Citus"): nothing happens unless the citus extension is installed in
-- this database (the cluster's set-up runs CREATE EXTENSION citus; `trips db up --workers N`,
-- service/db/citus.py). On a plain PostGIS server this migration is recorded and does nothing.
--
-- Reference tables (a copy on every node, joined locally with everything): regions,
-- datasources, trip_grid, trip_cluster_params, trip_cells (its key has no region_id).
-- Distributed by region_id, co-located: trips (and so every partition attached to it),
-- weekly_trips, weekly_cell_trips, trip_clusters, trip_cluster_tops. Every primary key of theirs
-- contains region_id, which Citus requires of a unique constraint and of an ON CONFLICT target.
-- Local to the coordinator: ingestion_jobs, ingestion_rejections, ingestion_events,
-- trip_id_counter, schema_migrations: the job queue (SKIP LOCKED), the event ids and
-- LISTEN/NOTIFY stay on one node.
DO $citus$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    PERFORM create_reference_table('regions');
    PERFORM create_reference_table('datasources');
    PERFORM create_reference_table('trip_grid');
    PERFORM create_reference_table('trip_cluster_params');
    PERFORM create_reference_table('trip_cells');
    PERFORM create_distributed_table('trips', 'region_id');
    PERFORM create_distributed_table('weekly_trips', 'region_id', colocate_with => 'trips');
    PERFORM create_distributed_table('weekly_cell_trips', 'region_id', colocate_with => 'trips');
    PERFORM create_distributed_table('trip_clusters', 'region_id', colocate_with => 'trips');
    PERFORM create_distributed_table('trip_cluster_tops', 'region_id', colocate_with => 'trips');
END
$citus$;
