"""The service context: caller, transaction and after-commit hooks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Select

from treadle.db import AsyncSession
from treadle.errors import UnauthenticatedError
from treadle.security import Actor
from treadle.services.identity import current_actor
from treadle.tenancy import SYSTEM, transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None]]
S = TypeVar("S", bound=Select[Any])


@dataclass(slots=True)
class ServiceContext:
    resources: Resources
    session: AsyncSession
    actor: Actor | None
    client_ip: str | None = None
    on_commit: list[AfterCommit] = field(default_factory=list)

    def require_actor(self) -> Actor:
        if self.actor is None:
            raise UnauthenticatedError("authentication required")
        return self.actor


@contextlib.asynccontextmanager
async def open_service_context(
    resources: Resources, actor: Actor | None, *, client_ip: str | None = None
) -> AsyncIterator[ServiceContext]:
    """One transaction: committed when the block succeeds, then the after-commit hooks run.

    An authenticated call runs as the user is now (current role; refused when the user or
    tenant is gone), not as the token says. It counts against no rate limit: adapters call
    ``count_api_call`` once per request.
    """
    tenant_id = actor.tenant_id if actor is not None else SYSTEM
    async with transaction(resources, tenant_id) as session:
        if actor is not None:
            actor = await current_actor(session, resources.identities, actor)
        ctx = ServiceContext(resources=resources, session=session, actor=actor, client_ip=client_ip)
        yield ctx
    await run_after_commit(ctx.on_commit)


async def count_api_call(resources: Resources, actor: Actor) -> None:
    """One hit on the tenant's API rate limit: once per REST request, once per GraphQL root
    field (so aliases count one by one); RATE_LIMITED when the tenant is over it."""
    limiter = resources.limiter
    await limiter.hit(limiter.limits.api_per_tenant, "api", str(actor.tenant_id))


async def run_after_commit(hooks: list[AfterCommit]) -> None:
    for hook in hooks:
        try:
            await hook()
        except Exception:
            # The database holds the truth; the reaper re-dispatches what was not enqueued.
            logger.exception("after-commit hook failed")


def owned_by(stmt: S, model: Any, actor: Actor) -> S:
    """Scope ``stmt`` to the actor's tenant."""
    return stmt.where(model.tenant_id == actor.tenant_id)
