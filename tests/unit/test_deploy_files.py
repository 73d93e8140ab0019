"""docker-compose.yml and the Dockerfile, checked on paper (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_compose_has_the_production_topology() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["treadle", "migrate"]
    assert services["api"]["command"] == ["treadle", "serve"]
    assert services["worker"]["command"] == ["treadle", "worker"]
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"]


def test_api_and_worker_wait_for_migration_and_healthy_stores() -> None:
    services = _compose()["services"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_required_secret_fails_fast_and_production_is_on() -> None:
    environment = _compose()["services"]["api"]["environment"]
    assert environment["JWT_SECRET"].startswith("${JWT_SECRET:?")
    assert environment["TREADLE_ENV"] == "production"
    assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert environment["REDIS_URL"].startswith("redis://")


def test_dockerfile_runs_as_non_root_with_dependencies_in_their_own_layer() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] != "USER root"
    copy_source = lines.index("COPY src ./src")
    install = next(i for i, line in enumerate(lines) if "-c constraints.txt" in line)
    assert install < copy_source
