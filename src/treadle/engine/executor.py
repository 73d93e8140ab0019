"""Runs one attempt of one step and turns whatever happens into a value.

Invariants:
- ``execute_step`` never raises for a step's own failure (errors, timeouts, bad output): it
  returns ``Failed``. Only ``asyncio.CancelledError`` (the worker shutting down or the run being
  cancelled) and ``HandOff`` (an inline step too slow to stay inline) propagate.
- An unexpected exception is logged once, here, and reported as a retryable INTERNAL failure
  without its message, which may hold details users must not see.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeAlias

from pydantic import BaseModel

from treadle.engine.json import JSON, JSONObject, unstorable
from treadle.engine.steps import Sleep, StepContext, StepError, StepType
from treadle.engine.template import HandOff, TemplateError

MAX_OUTPUT_BYTES: Final = 1_048_576


@dataclass(frozen=True, slots=True)
class Succeeded:
    output: JSON


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    code: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class Waiting:
    """The step sleeps until ``until`` and then runs again (with ``resumed_until`` set).

    ``waiting``: the data of a ``STEP_WAITING`` event to record (see ``Sleep``).
    """

    until: datetime
    waiting: JSONObject | None = None


Outcome: TypeAlias = Succeeded | Failed | Waiting


async def execute_step(
    step: StepType,
    config: BaseModel,
    ctx: StepContext,
    *,
    timeout_seconds: float,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
) -> Outcome:
    """Run one attempt of ``step`` under a timeout and classify the result.

    Args:
        step: The node's step type.
        config: The node's config, validated by ``step.config_model``.
        ctx: This attempt's context.
        timeout_seconds: Limit for the attempt; exceeding it is a retryable TIMEOUT.
        max_output_bytes: Limit for the JSON-encoded output (OUTPUT_TOO_LARGE, not retried).
    """
    # No render outlives the attempt, not even one left running in a thread by the timeout.
    ctx.allowance.deadline = min(ctx.allowance.deadline, time.monotonic() + timeout_seconds)
    try:
        async with asyncio.timeout(timeout_seconds):
            result = await step.run(config, ctx)
    except HandOff:
        raise  # an inline step outgrew its slice: the worker runs it as a claimed step
    except TimeoutError:
        return Failed(f"the step timed out after {timeout_seconds:g} s", "TIMEOUT", retryable=True)
    except StepError as exc:
        return Failed(exc.message, exc.code, retryable=exc.retryable)
    except TemplateError as exc:
        return Failed(exc.message, "TEMPLATE_ERROR", retryable=False)
    except Exception:
        ctx.logger.exception("step %s attempt %d raised unexpectedly", ctx.node_id, ctx.attempt)
        return Failed("internal error in step", "INTERNAL", retryable=True)
    if isinstance(result, Sleep):
        return Waiting(result.until, result.waiting)
    return _check_output(result, max_output_bytes, ctx)


def _check_output(output: JSON, max_output_bytes: int, ctx: StepContext) -> Outcome:
    problem = unstorable(output)  # before encoding: a lone surrogate cannot even be encoded
    if problem is not None:
        return unstorable_output(problem)
    try:
        encoded = json.dumps(output, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        # A step returned something that is not JSON: a bug in the step, so no retry helps.
        ctx.logger.exception("step %s returned output that is not JSON", ctx.node_id)
        return Failed("the step returned output that is not JSON", "INVALID_OUTPUT", False)
    size = len(encoded.encode())
    if size > max_output_bytes:
        message = f"the step output is {size:,} bytes; the limit is {max_output_bytes:,}"
        return Failed(message, "OUTPUT_TOO_LARGE", retryable=False)
    return Succeeded(output)


def unstorable_output(problem: str) -> Failed:
    """The permanent failure of a step whose output the database cannot store."""
    message = f"the step output cannot be stored: it contains {problem}"
    return Failed(message, "INVALID_OUTPUT", retryable=False)
