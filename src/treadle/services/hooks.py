"""Inbound webhooks (``POST /api/hooks/:triggerId``) and the listing of a workflow's triggers.

Invariants:
- A hook carries no JWT: the trigger's own secret authenticates it, through
  ``X-Treadle-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` (the WEBHOOK
  step's format). A bad or missing signature, or a timestamp more than 5 minutes away from
  now, is 401 and starts nothing.
- A trigger id that names no webhook trigger of a live workflow (unknown, removed, deleted
  workflow) is 404 and starts nothing.
- The same signed request sent twice (a replay within the 5 minutes) returns the run the
  first one started (idempotency key ``hook:<trigger>:<signature>``).
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sqlalchemy import select

from treadle.engine.json import JSONObject
from treadle.engine.steps.webhook import sign
from treadle.errors import NotFoundError, UnauthenticatedError, ValidationError
from treadle.models import Workflow, WorkflowTrigger
from treadle.security import Actor, Role
from treadle.services.context import ServiceContext, owned_by, run_after_commit
from treadle.services.runs import Execution, execute_workflow
from treadle.services.triggers import TriggerView
from treadle.services.workflows import load_workflow, parse_uuid
from treadle.tenancy import SYSTEM, transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

MAX_SKEW_SECONDS: Final = 300
# Runs started by a trigger act as no user: only their tenant matters to ``execute_workflow``.
TRIGGER_USER: Final = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class _Hook:
    tenant_id: uuid.UUID
    workflow_id: uuid.UUID
    key: str
    secret: str


async def list_triggers(ctx: ServiceContext, workflow_id: str) -> list[TriggerView]:
    """The workflow's triggers; webhook secrets only for ADMINs (None for others)."""
    actor = ctx.require_actor()
    workflow = await load_workflow(ctx, workflow_id)  # another tenant's: NOT_FOUND
    rows = await ctx.session.execute(
        owned_by(select(WorkflowTrigger), WorkflowTrigger, actor)
        .where(WorkflowTrigger.workflow_id == workflow.id)
        .order_by(WorkflowTrigger.created_at, WorkflowTrigger.key)
    )
    return [TriggerView.of(row, actor) for row in rows.scalars()]


def trigger_actor(tenant_id: uuid.UUID) -> Actor:
    """Who a trigger's run is started as: the tenant, no user."""
    return Actor(user_id=TRIGGER_USER, tenant_id=tenant_id, role=Role.MEMBER)


async def receive_hook(
    resources: Resources,
    trigger_id: str,
    body: bytes,
    signature: str | None,
    now: float | None = None,
) -> Execution:
    """Verify a webhook call and start a run with its JSON body as input.

    Raises:
        NotFoundError: no live webhook trigger has this id.
        UnauthenticatedError: the signature is missing, wrong or too old (or too new).
        ValidationError: the body is not a JSON object.
    """
    hook = await _find_hook(resources, parse_uuid(trigger_id, "trigger"))
    digest = verify_signature(hook.secret, body, signature, now or time.time())
    input_ = _json_object(body)
    async with transaction(resources, hook.tenant_id) as session:
        ctx = ServiceContext(resources, session, trigger_actor(hook.tenant_id))
        key = f"hook:{hook.key}:{digest}"
        execution = await execute_workflow(ctx, str(hook.workflow_id), input_, key)
    await run_after_commit(ctx.on_commit)
    return execution


async def _find_hook(resources: Resources, trigger_id: uuid.UUID) -> _Hook:
    async with transaction(resources, SYSTEM) as session:
        row = (
            await session.execute(
                select(
                    WorkflowTrigger.tenant_id,
                    WorkflowTrigger.workflow_id,
                    WorkflowTrigger.key,
                    WorkflowTrigger.secret,
                )
                .join(Workflow, Workflow.id == WorkflowTrigger.workflow_id)
                .where(
                    WorkflowTrigger.id == trigger_id,
                    WorkflowTrigger.type == "webhook",
                    Workflow.deleted_at.is_(None),
                )
            )
        ).one_or_none()
    if row is None or not row.secret:
        raise NotFoundError("trigger not found")
    return _Hook(row.tenant_id, row.workflow_id, row.key, row.secret)


def verify_signature(secret: str, body: bytes, header: str | None, now: float) -> str:
    """Check ``X-Treadle-Signature``; return the matching hex digest, else 401."""
    parts: dict[str, str] = {}
    for item in (header or "").split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, value)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        raise UnauthenticatedError("missing or malformed X-Treadle-Signature") from None
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise UnauthenticatedError("the signature's timestamp is more than 5 minutes off")
    expected = sign(secret, body, timestamp).rsplit("v1=", 1)[1]
    given = parts.get("v1", "")
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise UnauthenticatedError("the signature does not match")
    return expected


def _json_object(body: bytes) -> JSONObject:
    try:
        data = json.loads(body or b"{}")
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError) as exc:
        raise ValidationError("the request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ValidationError("the request body must be a JSON object (the run's input)")
    return data
