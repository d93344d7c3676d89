"""Ingestion events: rows first (the truth), NOTIFY second (a wake-up carrying only the id)."""
