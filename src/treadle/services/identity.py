"""The user behind a token, checked on every authenticated call.

A token proves who logged in, not that they still may act: a user deleted (or a tenant
removed) since must be refused, and a demoted ADMIN must act as a MEMBER. The database
answers; a small per-process cache (``security.IdentityCache``) keeps the answer for at most
a few seconds, so a hot client costs one lookup per ``ttl`` instead of one per request.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from treadle.db import AsyncSession
from treadle.errors import UnauthenticatedError
from treadle.models import User
from treadle.security import Actor, IdentityCache, Role


async def current_actor(session: AsyncSession, cache: IdentityCache, claimed: Actor) -> Actor:
    """``claimed`` with the user's role of now; UNAUTHENTICATED when the user or tenant is gone.

    ``session`` is already scoped to the claimed tenant, so the lookup also proves the
    user belongs to it (row-level security on PostgreSQL, the filter everywhere).
    """
    key = (claimed.user_id, claimed.tenant_id)
    found, role = cache.get(key)
    if not found:
        stmt = select(User.role).where(
            User.id == claimed.user_id, User.tenant_id == claimed.tenant_id
        )
        stored = (await session.execute(stmt)).scalar_one_or_none()
        role = Role(stored) if stored is not None and stored in Role.__members__ else None
        cache.put(key, role)
    if role is None:
        raise UnauthenticatedError("invalid or expired token")
    return claimed if role is claimed.role else replace(claimed, role=role)
