"""Test access to the machine's PostgreSQL and Redis."""

from __future__ import annotations

import os

import redis

from treadle.dbadmin import create_database, drop_database

PG_URL = os.environ.get("TREADLE_TEST_DATABASE_URL") or None
REDIS_URL = os.environ.get("TREADLE_TEST_REDIS_URL") or None
REQUIRE = os.environ.get("TREADLE_TEST_REQUIRE_SERVICES") == "1"


create_pg_database = create_database
drop_pg_database = drop_database


def redis_reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        return bool(client.ping())
    except redis.RedisError:
        return False
