-- The raw points read by the weekly averages and GET /trips come from covering B-trees over
-- plain coordinates instead of GiST over the geometries (measured on 2 x 2M trips, a city-sized
-- `both` box: GiST bitmap scans 220-375 ms, a covering B-tree over the geometries 193-249 ms,
-- this one 98-119 ms; per 2M-row partition the two builds take 3.9 s against 5.7-6.8 s for the
-- two GiST builds).
--
-- ox, oy, dx, dy are the coordinates of origin and destination (the same doubles: the loader
-- writes both from one array). Each index is keyed by (row, x), row = the fine row of y: the
-- 0.01-degree cell floor(y / 0.01) cut into ten rows of 0.001 degrees from its own lower bound
-- (service/analytics/finegrid.py), so that a row never strays into a neighbouring cell. A box is
-- read as one range of x per fine row (`row = ANY(rows) AND x BETWEEN a AND b`, one B-tree
-- descent per row), and the index carries what the edge reads test, so they are index-only
-- scans (COPY FREEZE marks a job's pages all-visible): the origin index also carries the
-- destination, for `match=both`, and both carry id and datasource_id, so that GET /trips finds
-- the first ids of an area without visiting the heap.
ALTER TABLE trips
    ADD COLUMN ox double precision,
    ADD COLUMN oy double precision,
    ADD COLUMN dx double precision,
    ADD COLUMN dy double precision;
UPDATE trips SET ox = ST_X(origin), oy = ST_Y(origin), dx = ST_X(destination), dy = ST_Y(destination);
ALTER TABLE trips
    ALTER COLUMN ox SET NOT NULL,
    ALTER COLUMN oy SET NOT NULL,
    ALTER COLUMN dx SET NOT NULL,
    ALTER COLUMN dy SET NOT NULL;

DROP INDEX trips_origin;
DROP INDEX trips_destination;
CREATE INDEX trips_origin_rows ON trips
    ((floor(oy / 0.01::double precision)::integer * 10 + least(9, greatest(0, floor((oy - floor(oy / 0.01::double precision) * 0.01::double precision) / 0.001::double precision)::integer))), ox)
    INCLUDE (oy, started_at, region_id, dx, dy, id, datasource_id);
CREATE INDEX trips_destination_rows ON trips
    ((floor(dy / 0.01::double precision)::integer * 10 + least(9, greatest(0, floor((dy - floor(dy / 0.01::double precision) * 0.01::double precision) / 0.001::double precision)::integer))), dx)
    INCLUDE (dy, started_at, region_id, id, datasource_id);
