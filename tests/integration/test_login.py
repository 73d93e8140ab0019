"""Login on PostgreSQL (row-level security on): an outdated password hash is replaced.

The hash is verified with no transaction open and replaced in a second, SYSTEM-scoped one; this
checks that the second transaction may write the user row and that the new hash works.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import make_settings
from treadle.models import User
from treadle.resources import Resources
from treadle.services import auth
from treadle.tasks.broker import open_runtime
from treadle.tenancy import SYSTEM, transaction

pytestmark = pytest.mark.postgres
PASSWORD = "long enough password"


async def _stored_hash(resources: Resources, email: str) -> str:
    async with transaction(resources, SYSTEM) as session:
        stmt = select(User.password_hash).where(User.email == email)
        return str((await session.execute(stmt)).scalar_one())


async def test_an_outdated_hash_is_replaced_at_login(pg_url: str, tmp_path: Path) -> None:
    email = f"rehash-{uuid.uuid4().hex[:8]}@example.test"
    body = {"tenantName": "Rehash", "email": email, "password": PASSWORD, "name": "R"}
    login = {"email": email, "password": PASSWORD}
    async with open_runtime(make_settings(pg_url, tmp_path), embedded=True) as resources:
        await auth.register(resources, body, client_ip=None)
        old = await _stored_hash(resources, email)
    stronger = make_settings(pg_url, tmp_path, treadle_argon2_time_cost=2)
    async with open_runtime(stronger, embedded=True) as resources:
        assert resources.hasher.needs_update(old)
        first = await auth.login(resources, login, client_ip=None)
        new = await _stored_hash(resources, email)
        assert not resources.hasher.needs_update(new)
        again = await auth.login(resources, login, client_ip=None)
    assert first.user == again.user
