"""Password hashing (argon2 via libpass) and JWT (HS256 only).

pyjwt and libpass are imported on first use: a worker process builds a ``TokenCodec`` and a
``PasswordHasher`` with its resources but never signs, verifies or hashes anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from treadle.errors import UnauthenticatedError

if TYPE_CHECKING:
    from passlib.context import CryptContext

ALGORITHM: Final = "HS256"
REQUIRED_CLAIMS: Final = ["sub", "tid", "role", "iat", "exp"]


class Role(StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: from a verified token, never from input."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    # When the token that proved this runs out (unix seconds); long-lived streams stop there.
    expires_at: float | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at


class PasswordHasher:
    """argon2id through libpass's CryptContext; hashing runs off the event loop."""

    def __init__(self, *, memory_cost: int = 65536, time_cost: int = 3, parallelism: int = 4):
        self._params = {"memory_cost": memory_cost, "rounds": time_cost, "parallelism": parallelism}
        self._crypt: CryptContext | None = None
        # Verified when the email is unknown, so a miss costs as long as a wrong password. Made
        # on first use: workers never verify passwords and should not pay 64 MiB at start.
        self._dummy: str | None = None

    @property
    def _context(self) -> CryptContext:
        if self._crypt is None:
            from passlib.context import CryptContext

            options = {f"argon2__{name}": value for name, value in self._params.items()}
            self._crypt = CryptContext(schemes=["argon2"], argon2__type="ID", **options)
        return self._crypt

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._context.hash, password)

    async def verify(self, password: str, stored: str | None) -> bool:
        """Check ``password``; with no stored hash, burn the same time and return False."""
        if self._dummy is None:
            self._dummy = await asyncio.to_thread(self._context.hash, "treadle-timing-equaliser")
        target = stored or self._dummy
        ok = await asyncio.to_thread(self._context.verify, password, target)
        return bool(ok) and stored is not None

    def needs_update(self, stored: str) -> bool:
        return bool(self._context.needs_update(stored))


class TokenCodec:
    """Issues and verifies HS256 JWTs carrying ``sub``, ``tid``, ``role``, ``iat``, ``exp``.

    A verified token's actor is remembered (by the token's SHA-256, bounded LRU) until the
    token expires: a client sends the same token on every request, and decoding it again
    (base64, JSON, HMAC, claim checks) was a few percent of an execute request's CPU. Whether
    the user still exists and with which role is checked per request all the same
    (``services.identity``); only the signature and claim checks are not repeated.
    """

    def __init__(self, secret: str, ttl_seconds: int, *, cache_size: int = 4096) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._cache_size = cache_size
        self._verified: OrderedDict[bytes, Actor] = OrderedDict()

    def __len__(self) -> int:
        """How many verified tokens are remembered."""
        return len(self._verified)

    def issue(self, actor: Actor, *, now: float | None = None) -> str:
        import jwt

        issued = int(now if now is not None else time.time())
        claims = {
            "sub": str(actor.user_id),
            "tid": str(actor.tenant_id),
            "role": actor.role.value,
            "iat": issued,
            "exp": issued + self._ttl,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def authenticate(self, token: str | None) -> Actor:
        """The actor of a bearer token that every adapter found; a missing one is refused too."""
        if not token:
            raise UnauthenticatedError("authentication required")
        return self.verify(token)

    def verify(self, token: str) -> Actor:
        """Return the token's actor, or raise UnauthenticatedError (one message for all causes)."""
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        actor = self._verified.get(key)
        if actor is not None and not actor.expired():
            self._verified.move_to_end(key)
            return actor
        self._verified.pop(key, None)
        actor = self._decode(token)
        if self._cache_size > 0:
            self._verified[key] = actor
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return actor

    def _decode(self, token: str) -> Actor:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
            return Actor(
                user_id=uuid.UUID(str(claims["sub"])),
                tenant_id=uuid.UUID(str(claims["tid"])),
                role=Role(claims["role"]),
                expires_at=float(claims["exp"]),
            )
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise UnauthenticatedError("invalid or expired token") from exc


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


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
