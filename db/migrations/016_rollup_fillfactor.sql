-- Room on the rollups' pages for the UPDATEs of every later job. A job's UPDATE of a stored key
-- changes only counts and sums, which no index holds: with free space on the row's page it is a
-- HOT update (no new index entry; the old version is pruned when the page is next visited),
-- without it a new version elsewhere plus an entry in the primary key. weekly_cell_trips sees
-- most of its keys again in every job, trip_clusters a growing share.
ALTER TABLE weekly_cell_trips SET (fillfactor = 70);
ALTER TABLE weekly_trips SET (fillfactor = 70);
ALTER TABLE trip_clusters SET (fillfactor = 85);
