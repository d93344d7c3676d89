"""Plain numbered SQL migrations from db/migrations, applied in order and recorded."""

from __future__ import annotations

import hashlib
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
                       applied_at timestamptz NOT NULL DEFAULT now(),
                       sha256 text)"""
            )
            conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS sha256 text")
            _refuse_old_history(conn)
            files = available(directory)
            done = _refuse_changed(conn, files)
            for version, name, sql in files:
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                        [version, name, checksum(sql)],
                    )
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied_now


class CannotMigrate(RuntimeError):
    """The database cannot be brought to these migrations in place: it must be made afresh."""


AFRESH = (
    "Start afresh: drop the database (or `trips db down` and remove the local cluster's data "
    "directory, shown by `trips db status`), then run `trips db migrate` and ingest the files "
    "again."
)


class OldHistory(CannotMigrate):
    """The database was made by the migrations from before the baseline."""


def _refuse_old_history(conn: psycopg.Connection) -> None:
    """A store made by the earlier numbered history (001_core.sql … 025) has another schema
    (no GiST on the points, clusters as a view): it cannot be brought to the baseline in place."""
    row = conn.execute("SELECT name FROM schema_migrations WHERE version = 1").fetchone()
    if row is not None and row[0] != BASELINE:
        raise OldHistory(
            "this database was made by the migrations from before the baseline "
            f"({row[0]}, …); it cannot be upgraded in place. {AFRESH}"
        )


def checksum(sql: str) -> str:
    """The SHA-256 of a migration's text, recorded when it is applied."""
    return hashlib.sha256(sql.encode()).hexdigest()


class ChangedMigration(CannotMigrate):
    """A migration applied to the database is not the file of the same number any more."""


def _refuse_changed(conn: psycopg.Connection, files: list[tuple[int, str, str]]) -> set[int]:
    """The versions applied, each checked against its file's checksum. Until a release, the
    baseline is edited in place (db/migrations/001_baseline.sql): a store migrated from another
    text of it has other functions, and sometimes other tables, than this code calls."""
    text = {v: sql for v, _, sql in files}
    done = set()
    for version, name, sha in conn.execute(
        "SELECT version, name, sha256 FROM schema_migrations ORDER BY version"
    ):
        done.add(version)
        if version in text and sha != checksum(text[version]):
            raise ChangedMigration(
                f"{name} has changed since this database was migrated"
                + (" (no checksum recorded: migrated before the checks)" if sha is None else "")
                + f"; the store cannot be brought to the new text in place. {AFRESH}"
            )
    return done


def pending(conn: psycopg.Connection) -> list[str]:
    """Names of migrations not applied on this connection's database."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done: set[int] = set()
    if exists and exists[0]:
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    return [name for v, name, _ in available() if v not in done]
