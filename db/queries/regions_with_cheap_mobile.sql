-- In which regions has the cheap_mobile datasource appeared?
-- With the number of its trips and when it was first and last seen, from the weekly rollup.
--   psql "$(trips db url)" -f db/queries/regions_with_cheap_mobile.sql
SELECT r.name AS region, sum(w.trips)::bigint AS trips,
       min(w.week) AS first_week, max(w.last_at) AS last_trip_at
FROM weekly_trips w
JOIN datasources d ON d.id = w.datasource_id
JOIN regions r ON r.id = w.region_id
WHERE d.name = 'cheap_mobile'
GROUP BY r.name
ORDER BY r.name;
