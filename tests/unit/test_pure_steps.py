"""CONDITION, TRANSFORM and DELAY through execute_step, and execute_step's own rules."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from treadle.engine.executor import Failed, Succeeded, Waiting, execute_step
from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import (
    PermanentStepError,
    RetryableStepError,
    Sleep,
    StepContext,
    condition,
    delay,
    transform,
)
from treadle.engine.template import TemplateEngine

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TEMPLATES = TemplateEngine()
CONTEXT: JSONObject = {
    "input": {"n": 3, "at": "2030-01-01T12:00:30Z", "tags": ["a"]},
    "steps": {"summarize": {"output": {"text": "x" * 150}}},
    "run": {"id": "run-1"},
    "workflow": {"id": "wf-1"},
}


def make_ctx(*, now: datetime = NOW, resumed_until: datetime | None = None) -> StepContext:
    return StepContext(
        run_id="run-1",
        workflow_id="wf-1",
        node_id="node",
        attempt=1,
        now=now,
        http=None,  # type: ignore[arg-type]  # these steps never touch the network
        model=None,  # type: ignore[arg-type]
        default_model="mock",
        logger=logging.getLogger("tests.pure_steps"),
        templates=TEMPLATES,
        template_context=CONTEXT,
        resumed_until=resumed_until,
    )


async def run(
    step: condition.Condition | transform.Transform | delay.Delay,
    config: JSONObject,
    **ctx: datetime | None,
) -> object:
    model = step.config_model.model_validate(config)
    return await execute_step(step, model, make_ctx(**ctx), timeout_seconds=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("steps.summarize.output.text | length > 100", True),
        ("input.n > 5", False),
        ("input.tags", True),
        ("[]", False),
        ("none", False),
    ],
)
async def test_condition(expression: str, result: bool) -> None:
    outcome = await run(condition.STEP, {"expression": expression})
    assert outcome == Succeeded({"result": result})


async def test_a_failing_condition_is_a_template_error() -> None:
    outcome = await run(condition.STEP, {"expression": "input.missing > 1"})
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == ("TEMPLATE_ERROR", False)
    assert "missing" in outcome.error


async def test_transform_renders_native_values_and_text() -> None:
    config: JSONObject = {
        "output": {"n": "{{ input.n * 2 }}", "label": "run {{ run.id }}", "{{ workflow.id }}": [1]}
    }
    outcome = await run(transform.STEP, config)
    assert outcome == Succeeded({"n": 6, "label": "run run-1", "wf-1": [1]})


async def test_transform_with_a_null_output() -> None:
    assert await run(transform.STEP, {"output": None}) == Succeeded(None)


async def test_transform_output_is_required() -> None:
    with pytest.raises(ValidationError):
        transform.Config.model_validate({})


async def test_delay_by_seconds_sleeps() -> None:
    assert await run(delay.STEP, {"seconds": 5}) == Waiting(NOW + timedelta(seconds=5))


async def test_a_zero_delay_finishes_at_once() -> None:
    assert await run(delay.STEP, {"seconds": 0}) == Succeeded({"waitedUntil": NOW.isoformat()})


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        ("2030-01-01T12:00:30Z", datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)),
        ("2030-01-01T12:00:30", datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)),  # naive = UTC
        ("2030-01-01T14:00:30+02:00", datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)),
        ("{{ input.at }}", datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)),
    ],
)
async def test_delay_until_a_moment(until: str, expected: datetime) -> None:
    assert await run(delay.STEP, {"until": until}) == Waiting(expected)


async def test_delay_until_a_past_moment_finishes_at_once() -> None:
    outcome = await run(delay.STEP, {"until": "2029-12-31T00:00:00Z"})
    assert outcome == Succeeded({"waitedUntil": "2029-12-31T00:00:00+00:00"})


@pytest.mark.parametrize(
    "until", ["tomorrow", "{{ input.n }}", "2030-03-01T00:00:00Z", "{{ input.tags }}"]
)
async def test_bad_or_too_distant_until_fails_permanently(until: str) -> None:
    outcome = await run(delay.STEP, {"until": until})
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == ("INVALID_UNTIL", False)


async def test_a_resumed_delay_finishes_when_due_and_sleeps_again_when_early() -> None:
    due = NOW + timedelta(seconds=5)
    early = await run(delay.STEP, {"seconds": 5}, resumed_until=due)
    assert early == Waiting(due)
    on_time = await run(delay.STEP, {"seconds": 5}, now=due, resumed_until=due)
    assert on_time == Succeeded({"waitedUntil": due.isoformat()})
    late = await run(
        delay.STEP,
        {"until": "{{ input.missing }}"},
        now=due + timedelta(hours=1),
        resumed_until=due,
    )
    assert late == Succeeded({"waitedUntil": due.isoformat()})  # the config is not rendered again


async def test_a_naive_clock_counts_as_utc() -> None:
    naive_now = datetime(2030, 1, 1, 12, 0)
    outcome = await run(delay.STEP, {"seconds": 1}, now=naive_now)
    assert outcome == Waiting(datetime(2030, 1, 1, 12, 0, 1, tzinfo=UTC))
    other_zone = NOW.astimezone(timezone(timedelta(hours=5)))
    assert await run(delay.STEP, {"seconds": 0}, now=other_zone) == Succeeded(
        {"waitedUntil": NOW.isoformat()}
    )


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"seconds": 1, "until": "2030-01-01"},
        {"seconds": -1},
        {"seconds": 2_592_001},
        {"until": ""},
    ],
)
def test_delay_config_needs_exactly_one_valid_field(config: JSONObject) -> None:
    with pytest.raises(ValidationError):
        delay.Config.model_validate(config)


# --- execute_step's own rules, with small fake step types --------------------------------------


class _Empty(BaseModel):
    pass


class _Fake:
    """A step whose behaviour is the coroutine it is built with."""

    name: ClassVar[str] = "FAKE"
    config_model: ClassVar[type[BaseModel]] = _Empty

    def __init__(self, result: JSON | Sleep | BaseException, pause: float = 0) -> None:
        self.result = result
        self.pause = pause

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
        await asyncio.sleep(self.pause)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


async def execute(step: _Fake, *, limit: float = 5, max_output_bytes: int = 1_048_576) -> object:
    return await execute_step(
        step, _Empty(), make_ctx(), timeout_seconds=limit, max_output_bytes=max_output_bytes
    )


async def test_a_slow_step_times_out_and_may_retry() -> None:
    outcome = await execute(_Fake(None, pause=10), limit=0.01)
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == ("TIMEOUT", True)


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (RetryableStepError("upstream 503", code="HTTP_503"), "HTTP_503", True),
        (PermanentStepError("bad request", code="HTTP_400"), "HTTP_400", False),
        (PermanentStepError("no code"), "STEP_FAILED", False),
    ],
)
async def test_step_errors_keep_their_code_and_retry_flag(
    error: Exception, code: str, retryable: bool
) -> None:
    assert await execute(_Fake(error)) == Failed(str(error), code, retryable)


async def test_an_unexpected_error_is_logged_once_and_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="tests.pure_steps"):
        outcome = await execute(_Fake(KeyError("secret detail")))
    assert outcome == Failed("internal error in step", "INTERNAL", True)
    records = [r for r in caplog.records if r.name == "tests.pure_steps"]
    assert len(records) == 1
    assert records[0].exc_info is not None


async def test_sleep_becomes_waiting() -> None:
    assert await execute(_Fake(Sleep(NOW))) == Waiting(NOW)


async def test_output_size_is_limited() -> None:
    fits: JSON = {"text": "x" * 89}  # {"text":"x…x"} is exactly 100 bytes
    assert await execute(_Fake(fits), max_output_bytes=100) == Succeeded(fits)
    outcome = await execute(_Fake({"text": "x" * 90}), max_output_bytes=100)
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == ("OUTPUT_TOO_LARGE", False)


async def test_output_that_is_not_json_fails_permanently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="tests.pure_steps"):
        outcome = await execute(_Fake({"when": NOW}))  # type: ignore[dict-item]
    assert isinstance(outcome, Failed)
    assert (outcome.code, outcome.retryable) == ("INVALID_OUTPUT", False)


async def test_cancellation_propagates() -> None:
    task = asyncio.create_task(execute(_Fake(None, pause=10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
