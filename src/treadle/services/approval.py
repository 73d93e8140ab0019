"""Resolving a waiting ``APPROVAL`` step: a person's decision becomes the step's output.

Invariants:
- Decided under the run row's lock: a step is resolved once, by a person or by its timeout
  (whichever commits first); the other gets 409 CONFLICT.
- A waiting approval is a RUNNING ``APPROVAL`` step with a wake time and no lease (see
  ``engine.steps.approval``); nothing else can be resolved.
- Who may decide comes from the node's config: a role, a list of emails, or (absent) any user
  of the run's tenant. Another tenant's run is NOT_FOUND, like any unknown id.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool
from sqlalchemy import select

from treadle.engine.executor import Succeeded
from treadle.engine.json import JSON, JSONObject
from treadle.engine.states import RunStatus, StepStatus
from treadle.engine.steps.approval import Config, resolution
from treadle.errors import ConflictError, NotFoundError, PermissionDeniedError
from treadle.models import User
from treadle.models.base import utcnow
from treadle.security import Actor, Role
from treadle.services.context import ServiceContext, owned_by
from treadle.services.outcome import apply_outcome
from treadle.services.rows import StepRow
from treadle.services.runs import defer_effects, require_run, run_view
from treadle.services.runtxn import dag_key, load_run_txn
from treadle.services.views import RunView, parse_input

APPROVAL = "APPROVAL"


class ApprovalInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approved: StrictBool
    comment: Annotated[str, Field(max_length=10_000)] | None = None
    data: JsonValue = None


async def resolve_approval(
    ctx: ServiceContext,
    run_id: str,
    node_id: str,
    approved: JSON,
    comment: JSON = None,
    data: JSON = None,
) -> RunView:
    """Approve or reject the waiting ``APPROVAL`` step ``node_id`` of a run.

    ``approved`` must be a boolean and ``comment`` a string or None (else VALIDATION_ERROR).

    Raises:
        NotFoundError: no such run for the caller's tenant, or the run has no such node.
        PermissionDeniedError: the node's ``approvers`` do not include the caller.
        ConflictError: the step is not an approval waiting for a decision.
        ValidationError: the body is malformed.
    """
    actor = ctx.require_actor()
    args = parse_input(ApprovalInput, {"approved": approved, "comment": comment, "data": data})
    found = await require_run(ctx, run_id)  # another tenant's run: NOT_FOUND
    txn = await load_run_txn(ctx.session, ctx.resources, found.id)
    step = txn.steps.get(node_id)
    if step is None:
        raise NotFoundError(f"the run has no step {node_id!r}")
    if step.type != APPROVAL:
        raise ConflictError(f"step {node_id!r} is a {step.type}, not an APPROVAL")
    config = ctx.resources.dags.get(dag_key(txn.run), txn.run.definition).configs[node_id]
    assert isinstance(config, Config)  # noqa: S101 - the registry maps APPROVAL to this type
    user = await _user(ctx, actor)
    if not may_approve(config, actor, user.email):
        raise PermissionDeniedError("you are not one of this step's approvers")
    if not _waiting(txn.run.status, step):
        raise ConflictError(f"step {node_id!r} is not waiting for a decision ({step.status})")
    by: JSONObject = {"id": str(user.id), "email": user.email, "name": user.name}
    output = resolution(args.approved, by, args.comment, args.data)
    apply_outcome(ctx.resources, txn, step, Succeeded(output), utcnow())
    await txn.save()
    defer_effects(ctx, txn)
    return run_view(txn.run, txn.steps)


def may_approve(config: Config, actor: Actor, email: str) -> bool:
    """Whether the caller is one of the node's approvers (roles: ADMIN > MEMBER)."""
    approvers = config.approvers
    if approvers is None or approvers == Role.MEMBER.value:
        return True
    if approvers == Role.ADMIN.value:
        return actor.role is Role.ADMIN
    return email.strip().lower() in approvers


def _waiting(run_status: str, step: StepRow) -> bool:
    return (
        run_status == RunStatus.RUNNING
        and step.status == StepStatus.RUNNING
        and step.wake_at is not None
        and step.lease_until is None
    )


async def _user(ctx: ServiceContext, actor: Actor) -> User:
    stmt = owned_by(select(User), User, actor).where(User.id == actor.user_id)
    user = (await ctx.session.execute(stmt)).scalar_one_or_none()
    if user is None:  # deleted since the token was issued (the service context checks too)
        raise PermissionDeniedError("your user no longer exists")
    return user
