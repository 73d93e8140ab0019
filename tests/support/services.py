"""Test access to the machine's PostgreSQL and Redis."""

from __future__ import annotations

import os

import asyncpg
import redis
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("TREADLE_TEST_DATABASE_URL") or None
REDIS_URL = os.environ.get("TREADLE_TEST_REDIS_URL") or None
REQUIRE = os.environ.get("TREADLE_TEST_REQUIRE_SERVICES") == "1"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_pg_database(base_url: str, name: str) -> str:
    """A fresh database beside ``base_url``'s, so runs never see each other's rows."""
    conn = await asyncpg.connect(_dsn(base_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(base_url: str, url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_dsn(base_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def redis_reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        return bool(client.ping())
    except redis.RedisError:
        return False
