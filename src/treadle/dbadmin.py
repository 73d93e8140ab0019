"""Creating and dropping whole PostgreSQL databases (tests, benchmarks, chaos runs).

Each helper connects to the server named by ``base_url`` (any database on it) as that URL's
user, which needs the CREATEDB privilege.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url


def pg_dsn(url: str) -> str:
    """An asyncpg DSN for a SQLAlchemy URL (``postgresql+asyncpg://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin_execute(base_url: str, statement: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on ``base_url``'s server and return its rows."""
    conn = await asyncpg.connect(pg_dsn(base_url))
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


async def create_database(base_url: str, name: str) -> str:
    """Create an empty database ``name`` beside ``base_url``'s (replacing any of that name)."""
    await admin_execute(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin_execute(base_url, f'CREATE DATABASE "{name}"')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(base_url: str, url: str) -> None:
    """Drop the database ``url`` names, disconnecting its sessions."""
    name = make_url(url).database
    await admin_execute(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
