"""Settings: the contract's defaults and the production secret rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from treadle.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_contract_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite+aiosqlite:///./treadle.db"
    assert settings.redis_url is None
    assert settings.jwt_ttl_seconds == 3600
    assert settings.treadle_ai_model == "gpt-4o-mini"
    assert (settings.host, settings.port) == ("127.0.0.1", 3001)


@pytest.mark.parametrize("secret", [None, "too-short"])
def test_production_requires_a_long_secret(secret: str | None) -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(treadle_env="production", jwt_secret=secret)


def test_production_accepts_a_long_secret() -> None:
    assert Settings(treadle_env="production", jwt_secret="s" * 32).is_production


def test_development_secret_is_generated_once(tmp_path: Path) -> None:
    settings = Settings(treadle_data_dir=tmp_path, jwt_secret=None)
    first = settings.resolve_jwt_secret()
    assert len(first) >= 32
    assert settings.resolve_jwt_secret() == first
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


def test_cli_refuses_to_start_in_production_without_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET",)}
    env["TREADLE_ENV"] = "production"
    done = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "JWT_SECRET" in lines[0]
