"""Database engine and sessions; SQLite gets WAL, a busy timeout and foreign keys."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import NullPool

SessionMaker = async_sessionmaker[AsyncSession]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails at
    # once (SQLITE_BUSY_SNAPSHOT) when another writer committed in between, busy timeout or not.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_hooks(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    event.listen(engine.sync_engine, "begin", _sqlite_begin)


# Statement errors quote their bound parameters (webhook secrets, Authorization headers,
# password hashes) unless told not to; those messages end up in logs and tracebacks.
HIDE_PARAMETERS: Final = True


def build_engine(url: str, *, pool_size: int = 10, pool_timeout: float = 30.0) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets its pragmas and immediate transactions.

    ``pool_timeout``: seconds a caller waits for a pooled connection before failing.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=HIDE_PARAMETERS
        )
        _sqlite_hooks(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=HIDE_PARAMETERS,
    )


def build_null_engine(url: str) -> AsyncEngine:
    """An engine without pooling, for one-off commands such as migrations."""
    engine = create_async_engine(url, poolclass=NullPool, hide_parameters=HIDE_PARAMETERS)
    if url.startswith("sqlite"):
        _sqlite_hooks(engine)
    return engine


def build_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)
