-- Trips per week by the pair block (0.05 degrees, 022) of one end: side 'p' for the origin, 'q'
-- for the destination, cx, cy = the block's floor(x / 0.05), floor(y / 0.05). With them a big
-- box's `either` comes from the same reads as its `both` (service/analytics/weekly.py):
--   either = p(R) + q(R) - pairs(R x R) + the trips with an end in R's strips, each counted by
--            [an end in the box] - [an end's block in R],
-- instead of origin + destination - both, which ran two single-end queries beside both's reads
-- (on 10M trips, box either p95 405 ms against both's 276). The blocks of 022's pairs are not
-- the 'O' / 'D' blocks of 5 x 5 rollup cells: floor(x / 0.05) and floor(floor(x / 0.01) / 5)
-- differ for points within rounding of a block's bound, and the answers must be exact.
-- The loader derives these rows from the job's pair totals; stored pairs are backfilled here.
ALTER TABLE weekly_cell_trips DROP CONSTRAINT weekly_cell_trips_side_check;
ALTER TABLE weekly_cell_trips ADD CONSTRAINT weekly_cell_trips_side_check
    CHECK (side IN ('o', 'd', 'O', 'D', 'P', 'p', 'q'));

INSERT INTO weekly_cell_trips (side, cx, cy, week, region_id, trips, part)
SELECT 'p', cx >> 12, (cx & 4095) - 2048, week, region_id, sum(trips), 0
FROM weekly_cell_trips WHERE side = 'P' GROUP BY 2, 3, 4, 5
UNION ALL
SELECT 'q', cy >> 12, (cy & 4095) - 2048, week, region_id, sum(trips), 0
FROM weekly_cell_trips WHERE side = 'P' GROUP BY 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5;

-- The server-side path: 022's staging (kept under the name stage_trip_cells_pairs), then the
-- pair blocks' rows from the staged pairs.
ALTER FUNCTION stage_trip_cells(regclass, double precision) RENAME TO stage_trip_cells_pairs;
CREATE FUNCTION stage_trip_cells(src regclass, g double precision) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM stage_trip_cells_pairs(src, g);
    INSERT INTO stage_cells (side, cx, cy, week, region_id, trips)
    SELECT 'p', cx >> 12, (cx & 4095) - 2048, week, region_id, sum(trips)
    FROM stage_cells WHERE side = 'P' GROUP BY 2, 3, 4, 5
    UNION ALL
    SELECT 'q', cy >> 12, (cy & 4095) - 2048, week, region_id, sum(trips)
    FROM stage_cells WHERE side = 'P' GROUP BY 2, 3, 4, 5;
END
$fn$;
