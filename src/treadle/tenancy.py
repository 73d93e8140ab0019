"""The per-transaction tenant scope that PostgreSQL's row-level security enforces.

Every transaction on PostgreSQL starts with ``scope_transaction``: it drops to the
``treadle_app`` role (which cannot bypass RLS, whatever ``DATABASE_URL`` names) and names the
tenant, both ``LOCAL`` to the transaction so nothing leaks to the next user of the connection.
``SYSTEM`` is for the few cross-tenant paths: login by email, registration, the reaper.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from sqlalchemy import text

from treadle.db import AsyncSession

if TYPE_CHECKING:
    from treadle.resources import Resources

APP_ROLE: Final = "treadle_app"
SYSTEM: Final = None

_SCOPE = text(
    "SELECT set_config('role', :role, true), set_config('treadle.tenant_id', :tenant, true), "
    "set_config('treadle.scope', :scope, true)"
)


async def scope_transaction(
    session: AsyncSession, tenant_id: uuid.UUID | None, *, postgres: bool
) -> None:
    """Scope the session's current transaction to ``tenant_id`` (or to ``SYSTEM``)."""
    if not postgres:
        return  # SQLite relies on the services' own tenant filters
    params = {
        "role": APP_ROLE,
        "tenant": str(tenant_id) if tenant_id is not None else "",
        "scope": "tenant" if tenant_id is not None else "system",
    }
    await session.execute(_SCOPE, params)


@contextlib.asynccontextmanager
async def transaction(
    resources: Resources, tenant_id: uuid.UUID | None
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction scoped to ``tenant_id``; committed when the block succeeds."""
    async with resources.sessions() as session, session.begin():
        await scope_transaction(session, tenant_id, postgres=resources.is_postgres)
        yield session
