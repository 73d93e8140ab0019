"""``WEBHOOK``: POST a JSON notification, optionally signed with HMAC-SHA256.

The body is serialized once and those exact bytes are both signed and sent, so a receiver can
verify ``X-Treadle-Signature`` against the raw request body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, StepContext
from treadle.engine.steps.http_request import (
    build_headers,
    check_status,
    network_errors,
    parse_url,
)

SIGNATURE_HEADER: Final = "X-Treadle-Signature"
_TIMEOUT_SECONDS: Final = 30.0
_OWN_HEADERS: Final = frozenset({"content-type", SIGNATURE_HEADER.lower()})


class Config(BaseModel):
    """Configuration of a ``WEBHOOK`` node; ``url``, ``headers`` and ``body`` are templates."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    body: JsonValue = None
    # SecretStr keeps the secret out of reprs and logs of the config.
    secret: SecretStr | None = None


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Treadle-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256>``.

    The MAC covers ``b"<timestamp>." + body`` so a captured request cannot be replayed later
    with a fresh timestamp.
    """
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def default_body(ctx: StepContext) -> JSONObject:
    """``{"runId", "workflowId", "input", "steps": {nodeId: {"output"}}}`` from the run context."""
    context = ctx.template_context
    finished = context.get("steps")
    steps: JSONObject = {}
    if isinstance(finished, dict):
        for node_id, step in finished.items():
            steps[node_id] = {"output": step.get("output") if isinstance(step, dict) else None}
    return {
        "runId": ctx.run_id,
        "workflowId": ctx.workflow_id,
        "input": context.get("input"),
        "steps": steps,
    }


class Webhook:
    """POSTs JSON and returns ``{"status"}``; same status and retry rules as ``HTTP_REQUEST``."""

    name: ClassVar[str] = "WEBHOOK"
    config_model: ClassVar[type[BaseModel]] = Config

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON:
        """Render, serialize, sign and send the notification."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        url = parse_url(await ctx.render(config.url))
        # Only the configured body is a template; the default carries run data that must not be
        # interpreted as template syntax.
        body = default_body(ctx) if config.body is None else await ctx.render(config.body)
        content = _serialize(body)
        rendered = await build_headers(config.headers, ctx)
        headers = {
            name: value for name, value in rendered.items() if name.lower() not in _OWN_HEADERS
        }
        headers["Content-Type"] = "application/json"
        if config.secret is not None:
            timestamp = int(ctx.now.timestamp())
            headers[SIGNATURE_HEADER] = sign(config.secret.get_secret_value(), content, timestamp)
        with network_errors(url.host):
            async with asyncio.timeout(_TIMEOUT_SECONDS):
                # Streamed and never read: only the status matters, however large the reply.
                async with ctx.http.stream(
                    "POST", url, content=content, headers=headers, timeout=_TIMEOUT_SECONDS
                ) as response:
                    status = response.status_code
        check_status(status, "POST", url.host)
        return {"status": status}


def _serialize(body: JSON) -> bytes:
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise PermanentStepError(
            f"webhook body is not JSON: {exc}", code="INVALID_CONFIG"
        ) from None
    return text.encode("utf-8")


STEP = Webhook()
