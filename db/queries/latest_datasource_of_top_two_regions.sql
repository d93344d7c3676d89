-- From the two most commonly appearing regions, which is the latest datasource?
-- For each of the two regions with the most trips: the datasource of its most recent trip.
-- Answered from the weekly_trips rollup (trips and latest trip time per region, week and
-- datasource), so it costs the same at 100 rows or 100 million.
--   psql "$(trips db url)" -f db/queries/latest_datasource_of_top_two_regions.sql
-- (DISTINCT ON rather than a LATERAL … LIMIT 1: Citus cannot push a LIMIT down into a lateral
-- subquery that refers to a CTE; on one node both read the two regions' rows of the primary key.)
WITH per_region AS (
    SELECT region_id, sum(trips) AS trips
    FROM weekly_trips
    GROUP BY region_id
    ORDER BY trips DESC, region_id
    LIMIT 2
), latest AS (
    SELECT DISTINCT ON (w.region_id) w.region_id, w.datasource_id, w.last_at
    FROM weekly_trips w
    WHERE w.region_id IN (SELECT region_id FROM per_region)
    ORDER BY w.region_id, w.last_at DESC, w.datasource_id
)
SELECT r.name AS region, p.trips, d.name AS latest_datasource, latest.last_at AS latest_trip_at
FROM per_region p
JOIN regions r ON r.id = p.region_id
JOIN latest ON latest.region_id = p.region_id
JOIN datasources d ON d.id = latest.datasource_id
ORDER BY p.trips DESC, r.name;
