"""Plain numbered SQL migrations from db/migrations, applied in order and recorded."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg


def migrations_dir() -> Path:
    """db/migrations of the source tree (editable install), else of the project root (cwd)."""
    here = Path(__file__).resolve().parents[2] / "db" / "migrations"
    if here.is_dir():
        return here
    from service.db.cluster import project_root

    return project_root() / "db" / "migrations"


BASELINE = "001_baseline.sql"
_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")
# One constant advisory lock so that concurrent starters (API, workers) migrate one at a time.
_LOCK_KEY = 7_301_842_001


def available(directory: Path | None = None) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path.name, path.read_text()))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers in {directory}")
    return sorted(found)


def migrate(url: str, directory: Path | None = None) -> list[str]:
    """Apply what is not yet applied; each file in its own transaction. Returns the names."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            _refuse_old_history(conn)
            for version, name, sql in available(directory):
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        [version, name],
                    )
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied_now


class OldHistory(RuntimeError):
    """The database was made by the migrations from before the baseline."""


def _refuse_old_history(conn: psycopg.Connection) -> None:
    """A store made by the earlier numbered history (001_core.sql … 025) has another schema
    (no GiST on the points, clusters as a view): it cannot be brought to the baseline in place."""
    row = conn.execute("SELECT name FROM schema_migrations WHERE version = 1").fetchone()
    if row is not None and row[0] != BASELINE:
        raise OldHistory(
            "this database was made by the migrations from before the baseline "
            f"({row[0]}, …); it cannot be upgraded in place. Start afresh: drop the database "
            "(or `trips db down` and remove the local cluster's data directory, shown by "
            "`trips db status`), then run `trips db migrate` and ingest the files again."
        )


def pending(conn: psycopg.Connection) -> list[str]:
    """Names of migrations not applied on this connection's database."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done: set[int] = set()
    if exists and exists[0]:
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    return [name for v, name, _ in available() if v not in done]
