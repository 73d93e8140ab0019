"""Step types: one module per type, each exposing ``STEP``.

A step type touches the outside world only through ``StepContext``. It returns its output (JSON),
or a ``Sleep`` when it must wait without holding a worker slot, and signals failure by raising
``RetryableStepError`` or ``PermanentStepError``; ``engine.executor`` turns those into values.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import BaseModel

from treadle.engine.json import JSON, JSONObject
from treadle.engine.sandbox import Allowance

if TYPE_CHECKING:
    import logging

    import httpx

    from treadle.engine.ai import ModelClient
    from treadle.engine.template import TemplateEngine


class StepError(Exception):
    """A step attempt failed; ``code`` is a short machine-readable reason."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str = "STEP_FAILED") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RetryableStepError(StepError):
    """The attempt failed in a way another attempt may fix (timeouts, 5xx, 429, network)."""

    retryable = True


class PermanentStepError(StepError):
    """The attempt failed in a way no retry will fix (4xx, egress denied, bad template)."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Returned by a step that must wait until ``until`` without holding a worker slot.

    ``waiting`` (when set) is recorded as a ``STEP_WAITING`` event: the step now waits for
    something outside the run (an approval), not just for the clock.
    """

    until: datetime
    waiting: JSONObject | None = None


DeltaSink = Callable[[str], Awaitable[None]]


class HttpClient(Protocol):
    """What step types use of an HTTP client: ``httpx.AsyncClient`` has it, and so has
    ``treadle.net.lazy.LazyHttpClient`` (which imports httpx only when a step first calls)."""

    def stream(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str],
        timeout: float,
        json: JSON = None,
        content: bytes | None = None,
    ) -> AbstractAsyncContextManager[httpx.Response]: ...

    async def aclose(self) -> None: ...


async def _drop_delta(_delta: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class StepContext:
    """Everything a step attempt may use from the outside world."""

    run_id: str
    workflow_id: str
    node_id: str
    attempt: int
    now: datetime
    http: HttpClient  # sends through the egress guard (see treadle.net.egress)
    model: ModelClient
    default_model: str
    logger: logging.Logger
    templates: TemplateEngine
    template_context: JSONObject = field(default_factory=dict)
    emit_delta: DeltaSink = _drop_delta
    # Set when the step was already started once and is being resumed (a DELAY waking up).
    resumed_until: datetime | None = None
    # Time all of this attempt's renders may still take (and by when); shared by them.
    allowance: Allowance = field(default_factory=Allowance)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.node_id}:{self.attempt}"

    async def render(self, value: JSON) -> JSON:
        """Render templates in ``value`` against this attempt's run context.

        A long render runs off the event loop; all renders of the attempt share ``allowance``.
        """
        return await self.templates.render_bounded(value, self.template_context, self.allowance)

    async def evaluate(self, expression: str) -> JSON:
        """Evaluate a bare expression against this attempt's run context (as ``render``)."""
        return await self.templates.evaluate_bounded(
            expression, self.template_context, self.allowance
        )


class StepType(Protocol):
    """One kind of node. ``config_model`` validates the node's ``config`` when a DAG is saved."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    # Optional ``inline: ClassVar[bool] = True`` marks a pure, quick type (no I/O): the worker
    # runs it inside the transaction that claims it instead of claiming and recording apart.

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep: ...


StepRegistry = Mapping[str, StepType]


def build_registry() -> dict[str, StepType]:
    """Collect ``STEP`` from every module of this package; duplicate names are an error."""
    registry: dict[str, StepType] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        step: StepType | None = getattr(module, "STEP", None)
        if step is None:
            continue
        if step.name in registry:
            raise RuntimeError(f"two step types are named {step.name}")
        registry[step.name] = step
    return registry
