"""Process settings from the environment (the contract's table), validated once at start-up.

``Settings()`` is built by entry points only; nothing builds it at import time.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    """Every setting of the API and the worker; field names map to upper-case variables."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./treadle.db"
    redis_url: str | None = None
    jwt_secret: str | None = None
    jwt_ttl_seconds: int = Field(default=3600, gt=0)
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    treadle_ai_model: str = "gpt-4o-mini"
    treadle_env: Literal["development", "production", "test"] = "development"
    treadle_egress_allow: str = ""
    port: int = 3001
    host: str = "127.0.0.1"
    log_level: str = "info"

    # Beyond the contract's table: operational knobs with safe defaults (documented in README).
    treadle_data_dir: Path = Path(".treadle")
    treadle_lease_seconds: float = Field(default=15.0, gt=0)
    treadle_reaper_interval_seconds: float = Field(default=1.0, gt=0)
    # A queued step not picked up within this is sent again (a lost message costs at most this).
    treadle_dispatch_grace_seconds: float = Field(default=10.0, gt=0)
    treadle_worker_concurrency: int = Field(default=32, gt=0)
    # A cron tick first seen later than this after its time was missed (downtime): not fired.
    treadle_cron_grace_seconds: float = Field(default=60.0, gt=0)
    treadle_max_body_bytes: int = 1_048_576
    # A request body that sends nothing for this long is refused (400) and its socket closed.
    treadle_body_idle_seconds: float = Field(default=10.0, gt=0)
    treadle_allowed_origins: str = ""
    # Browser origins allowed to call the HTTP API cross-origin (CORS); empty = none.
    treadle_cors_origins: str = ""
    # Proxies (IPs/CIDRs) whose X-Forwarded-For names the client; empty = the peer is the client.
    treadle_trusted_proxies: str = ""
    treadle_db_pool_size: int = Field(default=10, gt=0)
    treadle_db_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    treadle_redis_max_connections: int = Field(default=200, gt=0)
    treadle_queue_name: str = "treadle:steps"
    treadle_stream_idle_seconds: float = Field(default=600.0, gt=0)
    # Rate limits ("N/second|minute|hour|day"; empty turns one off).
    treadle_rate_login_per_email: str = "10/minute"
    treadle_rate_login_per_ip: str = "60/minute"
    treadle_rate_register_per_ip: str = "30/hour"
    treadle_rate_api_per_tenant: str = "6000/minute"
    treadle_rate_execute_per_tenant: str = "1200/minute"
    treadle_argon2_memory_kib: int = Field(default=65536, ge=8192)
    treadle_argon2_time_cost: int = Field(default=3, ge=1)
    # How long a token's user (exists? which role?) is trusted before the database is asked again.
    treadle_auth_cache_seconds: float = Field(default=5.0, ge=0, le=5)
    # Live subscriptions (GraphQL runEvents and the SSE stream).
    treadle_ws_init_timeout_seconds: float = Field(default=10.0, gt=0)
    treadle_ws_ping_seconds: float = Field(default=15.0, gt=0)
    treadle_max_subscriptions_per_connection: int = Field(default=50, gt=0)
    treadle_max_subscriptions_per_tenant: int = Field(default=1000, gt=0)
    treadle_subscriber_buffer: int = Field(default=256, ge=1)
    treadle_subscriber_poll_seconds: float = Field(default=5.0, gt=0)
    # Metrics: /metrics on the API (in production only with this bearer token set), and a port
    # of its own on each `treadle worker` (unset = no worker metrics server).
    treadle_metrics_token: str | None = None
    treadle_worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    treadle_worker_metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _production_secret(self) -> Settings:
        if self.treadle_env == "production":
            if not self.jwt_secret:
                raise ValueError("JWT_SECRET is required when TREADLE_ENV=production")
            if len(self.jwt_secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters in production"
                )
        return self

    @property
    def is_production(self) -> bool:
        return self.treadle_env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def resolve_jwt_secret(self) -> str:
        """The signing key: the setting, else (outside production) one kept in the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.treadle_data_dir / "jwt_secret"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        path.write_text(secret)
        path.chmod(0o600)
        logger.warning("JWT_SECRET is not set; generated a development key in %s", path)
        return secret
