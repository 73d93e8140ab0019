"""``APPROVAL``: wait for a person to approve or reject, without holding a worker slot.

The first attempt renders the prompt and returns ``Sleep(deadline, waiting=...)``: the step
stays RUNNING with a wake time and no lease, and a ``STEP_WAITING`` event names the prompt. A
person resolves it through the API (``services.approval``), which records the output directly.
When the deadline passes first, the reaper wakes the step and it resolves per ``onTimeout``.
Without ``timeoutSeconds`` it waits indefinitely (it wakes every 30 days only to sleep again).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import Sleep, StepContext

MAX_TIMEOUT_SECONDS: Final = 2_592_000  # 30 days, as DELAY
REWAIT: Final = timedelta(seconds=MAX_TIMEOUT_SECONDS)
ROLES: Final = ("ADMIN", "MEMBER")
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class Config(BaseModel):
    """Configuration of an ``APPROVAL`` node."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, frozen=True, populate_by_name=True
    )

    prompt: str = Field(min_length=1, max_length=10_000)  # a template
    # A role ("ADMIN": admins only; "MEMBER": any user) or a list of emails; absent: any user.
    approvers: Literal["ADMIN", "MEMBER"] | list[Email] | None = None
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False
    )
    on_timeout: Literal["reject", "approve"] = "reject"

    @field_validator("approvers")
    @classmethod
    def _emails(
        cls, value: Literal["ADMIN", "MEMBER"] | list[str] | None
    ) -> Literal["ADMIN", "MEMBER"] | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("list at least one email, or leave approvers out")
            return [email.strip().lower() for email in value]
        return value


def resolution(
    approved: bool, by: JSON, comment: str | None, data: JSON, *, timed_out: bool = False
) -> JSONObject:
    """The output of a resolved approval (``by`` is None when the timeout decided)."""
    return {"approved": approved, "by": by, "comment": comment, "data": data, "timedOut": timed_out}


class Approval:
    """Waits for a decision; output ``{"approved", "by", "comment", "data"}``."""

    name: ClassVar[str] = "APPROVAL"
    # Pure and quick: it only renders the prompt and parks itself.
    inline: ClassVar[bool] = True
    config_model: ClassVar[type[BaseModel]] = Config

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
        """Start waiting; once woken by the deadline, resolve per ``onTimeout``."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        now = _utc(ctx.now)
        if ctx.resumed_until is None:
            return await _start(config, ctx, now)
        if config.timeout_seconds is None:
            return Sleep(now + REWAIT)  # no deadline: keep waiting
        if _utc(ctx.resumed_until) > now:
            return Sleep(_utc(ctx.resumed_until))
        return resolution(config.on_timeout == "approve", None, None, None, timed_out=True)


async def _start(config: Config, ctx: StepContext, now: datetime) -> Sleep:
    prompt = await ctx.render(config.prompt)
    deadline = None
    if config.timeout_seconds is not None:
        deadline = now + timedelta(seconds=config.timeout_seconds)
    approvers = config.approvers
    waiting: JSONObject = {
        "prompt": prompt,
        "approvers": list(approvers) if isinstance(approvers, list) else approvers,
        "expiresAt": None if deadline is None else deadline.isoformat(),
        "onTimeout": config.on_timeout,
    }
    return Sleep(deadline or now + REWAIT, waiting=waiting)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


STEP = Approval()
