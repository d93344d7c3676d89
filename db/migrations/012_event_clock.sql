-- An event's time is when it was written, not when its transaction began: the `succeeded` event
-- of a long job is written at the end of a transaction that started with the job's final load.
ALTER TABLE ingestion_events ALTER COLUMN created_at SET DEFAULT clock_timestamp();
