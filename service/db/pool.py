"""The one connection pool of a process, opened and closed explicitly."""

from __future__ import annotations

from psycopg import Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from service.settings import Settings


def open_pool(settings: Settings, url: str | None = None, name: str = "trips") -> ConnectionPool:
    """A checked, sized pool of autocommit connections (transactions are explicit)."""
    pool = ConnectionPool(
        url or settings.resolved_database_url(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection,
        name=name,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


async def open_async_pool(settings: Settings, url: str) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
        name="trips-async",
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


def set_statement_timeout(conn: Connection, ms: int) -> None:
    conn.execute("SELECT set_config('statement_timeout', %s, false)", [str(ms)])
