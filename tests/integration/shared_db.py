"""A database copied from the migrated template that a whole test module shares (per-test
copies, the `db_url` fixture, would cost a copy per case where a module loads data once)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

from tests.conftest import _with_db


def module_database(server_url: str, template_db: str, prefix: str) -> Iterator[str]:
    """Yields the URL of a fresh copy of the template; drops it afterwards (a fixture body)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _with_db(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield _with_db(server_url, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
