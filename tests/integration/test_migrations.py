"""Migrations: an empty database migrates from zero, idempotently, to the declared model."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from geoalchemy2 import Geometry

from service.db.migrate import available, migrate, pending
from service.db.models import Base


def test_migrates_from_zero_idempotently(server_url: str, db_url: str) -> None:
    # db_url is already migrated (from the template): nothing left to apply, nothing pending
    assert migrate(db_url) == []
    with psycopg.connect(db_url) as conn:
        assert pending(conn) == []
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [v for v, _, _ in available()]


def test_empty_database_converges_to_the_model(db_url: str) -> None:
    # Drop everything the template gave, then migrate from zero.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        assert pending(conn) == [name for _, name, _ in available()]
    applied = migrate(db_url)
    assert applied == [name for _, name, _ in available()]
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db_url))
    try:
        inspector = sa.inspect(engine)
        for table in Base.metadata.sorted_tables:
            live = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert set(live) == {c.name for c in table.columns}, table.name
            for col in table.columns:
                got = live[col.name]
                if isinstance(col.type, Geometry):
                    assert got["type"].geometry_type == "POINT" and got["type"].srid == 4326
                else:
                    assert got["type"]._type_affinity is col.type._type_affinity, (
                        f"{table.name}.{col.name}: {got['type']} vs {col.type}"
                    )
    finally:
        engine.dispose()


def test_a_store_of_the_old_history_is_refused(db_url: str) -> None:
    """A database made by the migrations from before the baseline cannot be upgraded in place:
    migrate says so, and how to start afresh, and applies nothing."""
    import pytest

    from service.db.migrate import OldHistory

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations VALUES (1, '001_core.sql'), (25, '025_x.sql')")
    with pytest.raises(OldHistory, match="Start afresh"):
        migrate(db_url)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('trips')").fetchone() == (None,)


def test_a_store_migrated_from_another_baseline_text_is_refused(db_url: str) -> None:
    """The baseline is edited in place until a release: a store whose recorded checksum is not
    the file's (or that has none, migrated before the checks) is refused, with how to start
    afresh; an unchanged store migrates as before."""
    import pytest

    from service.db.migrate import ChangedMigration, checksum

    name, text = available()[0][1], available()[0][2]

    def record(sha: str | None) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE schema_migrations SET sha256 = %s WHERE version = 1", [sha])

    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT name, sha256 FROM schema_migrations WHERE version = 1")
        assert row.fetchone() == (name, checksum(text))
    try:
        record("0" * 64)
        with pytest.raises(ChangedMigration, match=f"{name} has changed.*Start afresh"):
            migrate(db_url)
        record(None)
        with pytest.raises(ChangedMigration, match="no checksum recorded"):
            migrate(db_url)
    finally:  # the Citus pass shares this database with the tests after this one
        record(checksum(text))
    assert migrate(db_url) == []
