"""The one connection pool of a process, opened and closed explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

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


# How long a request waits for a second connection before it does without one.
SPARE_WAIT_S = 0.02


@asynccontextmanager
async def spare_connection(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection | None]:
    """A second connection of the pool for a request that already holds one, or None when none
    is free within SPARE_WAIT_S: a request never waits long on a busy pool, so requests each
    holding one connection cannot starve each other waiting for a second."""
    try:
        conn = await pool.getconn(timeout=SPARE_WAIT_S)
    except PoolTimeout:
        conn = None
    try:
        yield conn
    finally:
        if conn is not None:
            await pool.putconn(conn)


def set_statement_timeout(conn: Connection, ms: int) -> None:
    conn.execute("SELECT set_config('statement_timeout', %s, false)", [str(ms)])
