-- The fine rows of the two ends (service/analytics/finegrid.py) stored as columns, written by the
-- loader from the same arrays as the coordinates, instead of computed by the indexes (014).
--
-- An expression index evaluates its expression once per row at every build: the fine row is
-- ten floating-point operations and casts through the executor, ~0.55 us a row. Building the
-- origin index of 2M trips took 4.3-5.1 s with the expression and 2.9-3.9 s on a stored column
-- (alternating four times each on one table); a job builds two such indexes, and their builds
-- are the longest chain of a large job. The loader computes the same value with numpy in the
-- same IEEE operations (finegrid.fine_array); tests/integration/test_ingest.py checks each
-- stored value against this expression.
--
-- Stores that hold trips are backfilled here, once (an UPDATE of every row, like 014's).
ALTER TABLE trips
    ADD COLUMN ofr integer,
    ADD COLUMN dfr integer;
UPDATE trips SET
    ofr = floor(oy / 0.01::double precision)::integer * 10 + least(9, greatest(0, floor((oy - floor(oy / 0.01::double precision) * 0.01::double precision) / 0.001::double precision)::integer)),
    dfr = floor(dy / 0.01::double precision)::integer * 10 + least(9, greatest(0, floor((dy - floor(dy / 0.01::double precision) * 0.01::double precision) / 0.001::double precision)::integer));
ALTER TABLE trips
    ALTER COLUMN ofr SET NOT NULL,
    ALTER COLUMN dfr SET NOT NULL;

DROP INDEX trips_origin_rows;
DROP INDEX trips_destination_rows;
CREATE INDEX trips_origin_rows ON trips (ofr, ox)
    INCLUDE (oy, started_at, region_id, dx, dy, id, datasource_id);
CREATE INDEX trips_destination_rows ON trips (dfr, dx)
    INCLUDE (dy, started_at, region_id, id, datasource_id);
