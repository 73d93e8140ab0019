"""A token is only as good as its user: deleted users, demoted ADMINs and missing tenants.

There is no API to delete or demote a user, so the tests do what an operator does: change the
row in the database, then call the API. The server caches each user's state for
``TREADLE_AUTH_CACHE_SECONDS`` (at most 5 s); these servers use 1 s so the waits stay short.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import TEST_SECRET, make_settings
from tests.e2e.conftest import PASSWORD, SIMPLE_DAG, Account, register
from tests.support.client import Api, ApiError, GraphQLApi, RestApi, unique_email
from tests.support.live import LiveServer
from tests.support.ws import GraphQLWs, WsClosedError
from treadle.models import User
from treadle.security import IdentityCache
from treadle.settings import Settings

CACHE_SECONDS = 1.0
WAIT_SECONDS = CACHE_SECONDS + 10  # generous: the machine is loaded


@dataclass
class Served:
    base_url: str
    database_url: str

    def change_user(self, user_id: str, **values: Any) -> None:
        """Update (or, with no values, delete) a user row the way an operator would."""

        async def run() -> None:
            engine = create_async_engine(self.database_url)
            try:
                async with engine.begin() as conn:
                    stmt = (
                        update(User).where(User.id == uuid.UUID(user_id)).values(**values)
                        if values
                        else delete(User).where(User.id == uuid.UUID(user_id))
                    )
                    assert (await conn.execute(stmt)).rowcount == 1
            finally:
                await engine.dispose()

        asyncio.run(run())


def _serve(database_url: str, data_dir: Path, **overrides: Any) -> Iterator[Served]:
    settings = make_settings(
        database_url, data_dir, treadle_auth_cache_seconds=CACHE_SECONDS, **overrides
    )
    with LiveServer.api(settings) as server:
        yield Served(server.base_url, database_url)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("token-user")
    if request.param == "sqlite":
        yield from _serve(request.getfixturevalue("sqlite_url"), data)
    else:
        settings: Settings = request.getfixturevalue("pg_settings")
        yield from _serve(settings.database_url, data, redis_url=settings.redis_url)


@pytest.fixture(params=["rest", "graphql"])
def client(request: pytest.FixtureRequest, served: Served) -> Iterator[Api]:
    api: Api = RestApi(served.base_url) if request.param == "rest" else GraphQLApi(served.base_url)
    yield api
    api.http.close()


def _refused_within(call: Callable[[], object], code: str) -> ApiError:
    """Call until it fails (the cached state may last ``CACHE_SECONDS``); return the error."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            call()
        except ApiError as exc:
            if exc.code == code:
                return exc
            raise
        assert time.monotonic() < deadline, f"still accepted after {WAIT_SECONDS}s"
        time.sleep(0.2)


def test_a_deleted_users_token_does_nothing(client: Api, served: Served) -> None:
    admin = register(client, "Deleted")
    client.create_workflow(admin.token, name="before", definition=SIMPLE_DAG)  # now cached
    served.change_user(admin.user["id"])
    error = _refused_within(
        lambda: client.create_workflow(admin.token, name="after", definition=SIMPLE_DAG),
        "UNAUTHENTICATED",
    )
    assert error.status == (401 if client.kind == "rest" else 200)
    with pytest.raises(ApiError) as created:
        client.create_user(
            admin.token, email=unique_email("x"), password=PASSWORD, name="X", role="ADMIN"
        )
    assert created.value.code == "UNAUTHENTICATED"
    with pytest.raises(ApiError) as listed:
        client.list_workflows(admin.token)
    assert listed.value.code == "UNAUTHENTICATED"


def test_a_demoted_admin_acts_as_a_member(client: Api, served: Served) -> None:
    admin = register(client, "Demoted")
    first = client.create_user(
        admin.token, email=unique_email("m"), password=PASSWORD, name="M", role="MEMBER"
    )
    assert first["role"] == "MEMBER"
    served.change_user(admin.user["id"], role="MEMBER")

    def create_admin() -> object:
        email = unique_email("a")
        return client.create_user(
            admin.token, email=email, password=PASSWORD, name="A", role="ADMIN"
        )

    assert _refused_within(create_admin, "FORBIDDEN").status == (
        403 if client.kind == "rest" else 200
    )
    assert client.me(admin.token)["role"] == "MEMBER"
    assert client.list_workflows(admin.token)["total"] == 0  # still a member of the tenant


def _attempt(call: Callable[[], object]) -> str | None:
    """The error code of one call, or None when it succeeded."""
    try:
        call()
    except ApiError as exc:
        return exc.code
    return None


def test_promotion_takes_effect_without_a_new_token(client: Api, served: Served) -> None:
    admin = register(client, "Promoted")
    member = client.create_user(
        admin.token, email=unique_email("p"), password=PASSWORD, name="P", role="MEMBER"
    )
    token = client.login(member["email"], PASSWORD)["token"]
    served.change_user(member["id"], role="ADMIN")
    deadline = time.monotonic() + WAIT_SECONDS
    made = lambda: client.create_user(token, email=unique_email("q"), password=PASSWORD, name="Q")  # noqa: E731
    while (code := _attempt(made)) is not None:
        assert code == "FORBIDDEN"
        assert time.monotonic() < deadline, "the promotion never took effect"
        time.sleep(0.2)
    assert client.me(token)["role"] == "ADMIN"


def _forged(user_id: str, tenant_id: str, role: str = "ADMIN") -> str:
    now = int(time.time())
    claims = {"sub": user_id, "tid": tenant_id, "role": role, "iat": now, "exp": now + 600}
    return jwt.encode(claims, TEST_SECRET, "HS256")


def test_a_token_naming_a_missing_tenant_or_user_is_unauthenticated(
    client: Api, served: Served
) -> None:
    admin = register(client, "RealTenant")
    tokens = [
        _forged(str(uuid.uuid4()), str(uuid.uuid4())),  # neither exists
        _forged(admin.user["id"], str(uuid.uuid4())),  # a real user, another (missing) tenant
        _forged(str(uuid.uuid4()), admin.tenant["id"]),  # a real tenant, a missing user
    ]
    for token in tokens:
        with pytest.raises(ApiError) as created:
            client.create_workflow(token, name="w", definition=SIMPLE_DAG)
        assert created.value.code == "UNAUTHENTICATED"
        assert created.value.status == (401 if client.kind == "rest" else 200)
        with pytest.raises(ApiError) as made:
            client.create_user(
                token, email=unique_email("f"), password=PASSWORD, name="F", role="ADMIN"
            )
        assert made.value.code == "UNAUTHENTICATED"
        with pytest.raises(ApiError) as listed:
            client.list_workflows(token)
        assert listed.value.code == "UNAUTHENTICATED"


async def _close_code(base_url: str, token: str) -> int | None:
    """How the server answers ``connection_init`` with ``token``: None = acknowledged."""
    try:
        async with GraphQLWs.connect(base_url, token):
            return None
    except WsClosedError as closed:
        return closed.code


async def test_websocket_connect_checks_the_user(served: Served) -> None:
    with RestApi(served.base_url) as rest:
        account: Account = register(rest, "Socket")
    assert await _close_code(served.base_url, account.token) is None
    await asyncio.to_thread(served.change_user, account.user["id"])
    deadline = time.monotonic() + WAIT_SECONDS
    while (code := await _close_code(served.base_url, account.token)) is None:
        assert time.monotonic() < deadline, "a deleted user's socket is still acknowledged"
        await asyncio.sleep(0.2)
    assert code == 4403
    ghost = _forged(str(uuid.uuid4()), str(uuid.uuid4()))
    assert await _close_code(served.base_url, ghost) == 4403


def test_the_cache_is_short_and_bounded() -> None:
    now = [0.0]
    cache = IdentityCache(ttl_seconds=60, max_entries=3, clock=lambda: now[0])
    keys = [(uuid.uuid4(), uuid.uuid4()) for _ in range(5)]
    for key in keys:
        cache.put(key, None)
    assert len(cache) == 3  # the oldest two were dropped
    assert cache.get(keys[0]) == (False, None)
    assert cache.get(keys[4]) == (True, None)
    now[0] = 5.0  # a ttl above 5 s is cut to 5 s
    assert cache.get(keys[4]) == (False, None)
    off = IdentityCache(ttl_seconds=0)
    off.put(keys[0], None)
    assert off.get(keys[0]) == (False, None)
