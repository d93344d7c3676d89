-- From the two most commonly appearing regions, which is the latest datasource?
-- For each of the two regions with the most trips: the datasource of its most recent trip.
-- Answered from the weekly_trips rollup (trips and latest trip time per region, week and
-- datasource), so it costs the same at 100 rows or 100 million.
--   psql "$(trips db url)" -f db/queries/latest_datasource_of_top_two_regions.sql
WITH per_region AS (
    SELECT region_id, sum(trips) AS trips
    FROM weekly_trips
    GROUP BY region_id
    ORDER BY trips DESC, region_id
    LIMIT 2
)
SELECT r.name AS region, p.trips, d.name AS latest_datasource, latest.last_at AS latest_trip_at
FROM per_region p
JOIN regions r ON r.id = p.region_id
CROSS JOIN LATERAL (
    SELECT w.datasource_id, w.last_at
    FROM weekly_trips w
    WHERE w.region_id = p.region_id
    ORDER BY w.last_at DESC, w.datasource_id
    LIMIT 1
) latest
JOIN datasources d ON d.id = latest.datasource_id
ORDER BY p.trips DESC, r.name;
