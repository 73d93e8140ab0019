"""Idempotent demo data: a tenant, an admin login and two example workflows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from treadle.models import User, Workflow
from treadle.resources import Resources
from treadle.security import Actor, Role
from treadle.services import auth, workflows
from treadle.services.context import open_service_context

DEMO_EMAIL = "demo@treadle.dev"
DEMO_PASSWORD = "treadle-demo-password"  # noqa: S105 - a published demo login

DEMO_WORKFLOWS: list[dict[str, Any]] = [
    {
        "name": "Greeting with a branch",
        "description": "Shapes the input, branches on it, waits a second on one branch.",
        "definition": {
            "nodes": [
                {
                    "id": "shape",
                    "type": "TRANSFORM",
                    "config": {"output": {"greeting": "Hello, {{ input.name or 'world' }}!"}},
                },
                {
                    "id": "isLong",
                    "type": "CONDITION",
                    "config": {"expression": "steps.shape.output.greeting | length > 15"},
                },
                {"id": "pause", "type": "DELAY", "config": {"seconds": 1}},
                {
                    "id": "done",
                    "type": "TRANSFORM",
                    "config": {"output": {"message": "{{ steps.shape.output.greeting }}"}},
                },
            ],
            "edges": [
                {"from": "shape", "to": "isLong"},
                {"from": "isLong", "to": "pause", "when": True},
                {"from": "isLong", "to": "done", "when": False},
                {"from": "pause", "to": "done"},
            ],
        },
    },
    {
        "name": "Summarize with AI",
        "description": "Asks the model (mock without OPENAI_API_KEY) and shapes its answer.",
        "definition": {
            "nodes": [
                {
                    "id": "summarize",
                    "type": "AI_COMPLETION",
                    "config": {
                        "prompt": "Summarize in one line: {{ input.text or 'Treadle runs DAGs.' }}",
                        "maxTokens": 100,
                        "stream": True,
                    },
                },
                {
                    "id": "result",
                    "type": "TRANSFORM",
                    "config": {"output": {"summary": "{{ steps.summarize.output.text }}"}},
                },
            ],
            "edges": [{"from": "summarize", "to": "result"}],
        },
    },
]


async def seed(resources: Resources) -> tuple[str, str]:
    """Create what is missing of the demo data; return the login (email, password)."""
    async with open_service_context(resources, None) as ctx:
        user = (
            await ctx.session.execute(select(User).where(User.email == DEMO_EMAIL))
        ).scalar_one_or_none()
    if user is None:
        payload = {
            "tenantName": "Demo",
            "email": DEMO_EMAIL,
            "password": DEMO_PASSWORD,
            "name": "Demo Admin",
        }
        view = await auth.register(resources, payload, client_ip=None)
        actor = Actor(view.user.id, view.tenant.id, Role.ADMIN)
    else:
        actor = Actor(user.id, user.tenant_id, Role(user.role))
    async with open_service_context(resources, actor) as ctx:
        rows = await ctx.session.execute(
            select(Workflow.name).where(
                Workflow.tenant_id == actor.tenant_id, Workflow.deleted_at.is_(None)
            )
        )
        existing = set(rows.scalars())
        for spec in DEMO_WORKFLOWS:
            if spec["name"] not in existing:
                await workflows.create_workflow(ctx, spec)
    return DEMO_EMAIL, DEMO_PASSWORD
