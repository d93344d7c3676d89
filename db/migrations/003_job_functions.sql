-- Job and event primitives shared by the API (async), the workers and the CLI (sync).

-- Insert an event and NOTIFY its id. The transaction-level advisory lock makes event ids become
-- visible in increasing order: a reader that has seen id N never later sees a smaller id commit,
-- which is what makes Last-Event-ID resumption lossless. Call it last in a transaction.
CREATE FUNCTION ingestion_event(p_job bigint, p_type text, p_payload jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    new_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7301842002);
    INSERT INTO ingestion_events (job_id, type, payload)
    VALUES (p_job, p_type, jsonb_build_object('job_id', p_job) || coalesce(p_payload, '{}'))
    RETURNING id INTO new_id;
    PERFORM pg_notify('trips_events', new_id::text);
    RETURN new_id;
END
$fn$;

-- Queue a file once per sha256 (unless forced): returns the job id and whether it is new.
CREATE FUNCTION enqueue_ingestion(p_source text, p_path text, p_sha256 text, p_bytes bigint,
                                  p_force boolean)
RETURNS TABLE (job_id bigint, created boolean) LANGUAGE plpgsql AS $fn$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO ingestion_jobs (source, path, sha256, bytes, force)
    VALUES (p_source, p_path, p_sha256, p_bytes, p_force)
    ON CONFLICT (sha256) WHERE NOT force AND state <> 'failed' DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NOT NULL THEN
        PERFORM pg_notify('trips_jobs', '');
        PERFORM ingestion_event(new_id, 'queued',
                                jsonb_build_object('source', p_source, 'bytes', p_bytes));
        RETURN QUERY SELECT new_id, true;
    ELSE
        RETURN QUERY SELECT j.id, false FROM ingestion_jobs j
            WHERE j.sha256 = p_sha256 AND NOT j.force AND j.state <> 'failed'
            ORDER BY j.id LIMIT 1;
    END IF;
END
$fn$;
