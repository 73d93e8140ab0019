"""The user behind a token, checked on every authenticated call.

A token proves who logged in, not that they still may act: a user deleted (or a tenant
removed) since must be refused, and a demoted ADMIN must act as a MEMBER. The database
answers; a small per-process cache keeps the answer for at most a few seconds, so a hot
client costs one lookup per ``ttl`` instead of one per request.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from sqlalchemy import select

from treadle.db import AsyncSession
from treadle.errors import UnauthenticatedError
from treadle.models import User
from treadle.security import Actor, Role

MAX_TTL_SECONDS: Final = 5.0
_Key = tuple[uuid.UUID, uuid.UUID]


class IdentityCache:
    """Current role per (user, tenant), or None for one that no longer exists; bounded LRU."""

    def __init__(
        self,
        ttl_seconds: float = MAX_TTL_SECONDS,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = min(ttl_seconds, MAX_TTL_SECONDS)
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[_Key, tuple[float, Role | None]] = OrderedDict()

    def get(self, key: _Key) -> tuple[bool, Role | None]:
        """``(found, role)``; an entry older than the ttl is not found."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        stored_at, role = entry
        if self._clock() - stored_at >= self._ttl:
            del self._entries[key]
            return False, None
        return True, role

    def put(self, key: _Key, role: Role | None) -> None:
        if self._ttl <= 0:
            return
        self._entries[key] = (self._clock(), role)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


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
