"""Database engine and sessions; SQLite gets WAL, a busy timeout and foreign keys."""

from __future__ import annotations

import time
from typing import Any, Final

from sqlalchemy import event, exc
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


# A pooled connection idle longer than this is pinged before use: the server (or a proxy) may
# have dropped it meanwhile. A connection in steady use is only checked for being closed, which
# costs no round trip (``pool_pre_ping`` would cost one on every checkout).
IDLE_PING_SECONDS: Final = 10.0


def _checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Hand out a live connection: a closed one, or a long-idle one that fails a ping, is
    replaced (``DisconnectionError`` makes the pool discard it and connect anew)."""
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        raise exc.DisconnectionError("connection closed")
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as error:
        raise exc.DisconnectionError("connection failed its ping") from error


def _liveness_hooks(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "checkin", _checkin)
    event.listen(engine.sync_engine, "checkout", _checkout)


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
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        hide_parameters=HIDE_PARAMETERS,
    )
    _liveness_hooks(engine)
    return engine


def build_null_engine(url: str) -> AsyncEngine:
    """An engine without pooling, for one-off commands such as migrations."""
    engine = create_async_engine(url, poolclass=NullPool, hide_parameters=HIDE_PARAMETERS)
    if url.startswith("sqlite"):
        _sqlite_hooks(engine)
    return engine


def build_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)
