"""``DELAY``: wait for a while, or until a moment, without holding a worker slot.

The step returns ``Sleep(until)``; the caller parks it and runs it again at ``until`` with
``ctx.resumed_until`` set, so a delay survives worker restarts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON
from treadle.engine.steps import PermanentStepError, Sleep, StepContext

MAX_DELAY_SECONDS: Final = 2_592_000  # 30 days
MAX_DELAY: Final = timedelta(seconds=MAX_DELAY_SECONDS)


class Config(BaseModel):
    """Configuration of a ``DELAY`` node: exactly one of ``seconds`` and ``until``."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    seconds: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)
    until: str | None = Field(default=None, min_length=1)  # ISO-8601; may be a template

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.seconds is None) == (self.until is None):
            raise ValueError('set exactly one of "seconds" and "until"')
        return self


class Delay:
    """Waits ``seconds``, or until ``until``; output ``{"waitedUntil": iso}``."""

    name: ClassVar[str] = "DELAY"

    # Pure and quick: runs inside the claiming transaction (one transaction per step).

    inline: ClassVar[bool] = True
    config_model: ClassVar[type[BaseModel]] = Config

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
        """Return at once when the moment has passed, else a ``Sleep`` until it."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        now = _utc(ctx.now)
        if ctx.resumed_until is not None:
            until = _utc(ctx.resumed_until)
        elif config.seconds is not None:
            until = now + timedelta(seconds=config.seconds)
        else:
            until = _parse_until(await ctx.render(config.until))
            if until - now > MAX_DELAY:
                raise PermanentStepError(
                    f"until {until.isoformat()} is more than 30 days ahead", code="INVALID_UNTIL"
                )
        if until <= now:
            return {"waitedUntil": until.isoformat()}
        return Sleep(until)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are UTC; aware ones are converted to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _parse_until(value: JSON) -> datetime:
    if not isinstance(value, str):
        raise PermanentStepError(
            f"until must be an ISO-8601 date-time string, not {type(value).__name__}",
            code="INVALID_UNTIL",
        )
    try:
        return _utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        raise PermanentStepError(
            f"until {value[:64]!r} is not an ISO-8601 date-time", code="INVALID_UNTIL"
        ) from None


STEP = Delay()
