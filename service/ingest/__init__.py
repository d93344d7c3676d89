"""Ingestion: reading and validating trip files, loading them, jobs, workers, the inbox."""
