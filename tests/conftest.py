"""Shared fixtures: settings, databases, live uvicorn servers, real worker processes.

Postgres and Redis tests run when ``TREADLE_TEST_DATABASE_URL`` / ``TREADLE_TEST_REDIS_URL``
name reachable servers. With ``TREADLE_TEST_REQUIRE_SERVICES=1`` (CI) an unreachable server
fails the run instead of skipping those tests.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer, WorkerProcess
from tests.support.services import (
    PG_URL,
    REDIS_URL,
    REQUIRE,
    create_pg_database,
    drop_pg_database,
    redis_reachable,
)
from treadle.migrate import upgrade
from treadle.settings import Settings

TEST_SECRET = "test-secret-" + "x" * 40


def pytest_report_header(config: pytest.Config) -> list[str]:
    pg = f"ON: {PG_URL}" if PG_URL else "OFF (set TREADLE_TEST_DATABASE_URL)"
    redis = f"ON: {REDIS_URL}" if REDIS_URL else "OFF (set TREADLE_TEST_REDIS_URL)"
    return [
        f"treadle: PostgreSQL tests {pg}",
        f"treadle: Redis tests {redis}",
        f"treadle: services required: {REQUIRE}",
    ]


def _need(what: str, url: str | None) -> str:
    if url:
        return url
    if REQUIRE:
        pytest.fail(f"{what} is required (TREADLE_TEST_REQUIRE_SERVICES=1) but not configured")
    pytest.skip(f"{what} not configured")


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test process: fast hashing, loopback egress allowed, its own queue."""
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": None,
        "jwt_secret": TEST_SECRET,
        "treadle_env": "test",
        "treadle_data_dir": data_dir,
        "treadle_argon2_memory_kib": 8192,
        "treadle_argon2_time_cost": 1,
        "treadle_egress_allow": "127.0.0.1,localhost",
        "treadle_queue_name": f"treadle:test:{uuid.uuid4().hex[:8]}",
        "log_level": "warning",
        # Every test client is 127.0.0.1: per-IP limits are tested on their own server.
        "treadle_rate_login_per_ip": "",
        "treadle_rate_register_per_ip": "",
        "treadle_rate_login_per_email": "",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "treadle.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    base = _need("PostgreSQL", PG_URL)
    url = asyncio.run(create_pg_database(base, f"treadle_test_{os.getpid()}"))
    upgrade(url)
    yield url
    asyncio.run(drop_pg_database(base, url))


@pytest.fixture(scope="module")
def private_pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test module's own: no other module's reaper can touch its steps."""
    base = _need("PostgreSQL", PG_URL)
    name = f"treadle_{request.module.__name__.rsplit('.', 1)[-1]}_{os.getpid()}"
    url = asyncio.run(create_pg_database(base, name[:63]))
    upgrade(url)
    yield url
    asyncio.run(drop_pg_database(base, url))


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _need("Redis", REDIS_URL)
    if not redis_reachable(url):
        pytest.fail(f"Redis at {url} is not reachable")
    # Not flushed: queue names, channels and rate-limit keys are unique per test session, and
    # another session may be using the same database right now.
    return url


@pytest.fixture(scope="session")
def sqlite_server(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Embedded mode over real HTTP: SQLite, in-process queue and bus, mock AI."""
    settings = make_settings(sqlite_url, tmp_path_factory.mktemp("data"))
    with LiveServer.embedded(settings) as server:
        yield server.base_url


@pytest.fixture(scope="session")
def pg_settings(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        pg_url,
        tmp_path_factory.mktemp("pgdata"),
        redis_url=redis_url,
        treadle_lease_seconds=3.0,
        treadle_reaper_interval_seconds=0.5,
    )


@pytest.fixture(scope="session")
def pg_server(pg_settings: Settings) -> Iterator[str]:
    """Production topology: API process-less server on Postgres + Redis, plus one real worker."""
    with LiveServer.api(pg_settings) as server, WorkerProcess(pg_settings):
        yield server.base_url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest) -> str:
    """Each e2e test runs against embedded mode and against Postgres + Redis + a worker."""
    name = "sqlite_server" if request.param == "sqlite" else "pg_server"
    url: str = request.getfixturevalue(name)
    return url
