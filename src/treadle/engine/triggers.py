"""Workflow triggers: the ``triggers`` list of a definition, and cron tick arithmetic.

A definition may carry ``"triggers": [...]`` beside ``nodes`` and ``edges``:

- ``{"type": "cron", "schedule": "*/5 * * * *", "timezone": "Europe/Paris", "input": {...},
  "catchUp": false}``: a run per tick (croniter syntax; a sixth field counts seconds).
- ``{"type": "webhook"}``: a run per signed ``POST /api/hooks/:triggerId``.

Each trigger has an ``id`` (like a node id) that names it within its workflow across updates;
when absent, the canonical form fills in ``<type><position>`` (``cron1``, ``webhook2``).
Cron ticks are computed in the trigger's time zone and returned in UTC. croniter is imported by
the functions that use it: a worker with no cron trigger to tick never loads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, field_validator
from pydantic.alias_generators import to_camel

MAX_TRIGGERS: Final = 20
TRIGGER_ID: Final = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
_CONFIG: Final = ConfigDict(
    extra="forbid", alias_generator=to_camel, frozen=True, populate_by_name=True
)


class CronTrigger(BaseModel):
    """A run per tick of ``schedule`` in ``timezone``, with ``input`` as its input."""

    model_config = _CONFIG

    id: str | None = Field(default=None, pattern=TRIGGER_ID)
    type: Literal["cron"]
    schedule: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    input: dict[str, JsonValue] = Field(default_factory=dict)
    # After downtime, also fire the latest tick that was missed (once); default: skip them.
    catch_up: bool = False

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from croniter import croniter

        value = " ".join(value.split())
        if len(value.split(" ")) not in (5, 6) or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron schedule (5 fields, or 6 with seconds last)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value


class WebhookTrigger(BaseModel):
    """A run per signed ``POST /api/hooks/:triggerId``; the request body is its input."""

    model_config = _CONFIG

    id: str | None = Field(default=None, pattern=TRIGGER_ID)
    type: Literal["webhook"]


Trigger = Annotated[CronTrigger | WebhookTrigger, Field(discriminator="type")]
TRIGGER: Final[TypeAdapter[CronTrigger | WebhookTrigger]] = TypeAdapter(Trigger)


def with_id(trigger: CronTrigger | WebhookTrigger, position: int) -> CronTrigger | WebhookTrigger:
    """The trigger with its id filled in (``<type><position>``, 1-based) when it had none."""
    if trigger.id is not None:
        return trigger
    return trigger.model_copy(update={"id": f"{trigger.type}{position}"})


def ticks(schedule: str, timezone: str, after: datetime, until: datetime) -> list[datetime]:
    """The ticks ``t`` with ``after < t <= until``, in UTC, oldest first (at most 1,000)."""
    from croniter import croniter

    zone = ZoneInfo(timezone)
    it = croniter(schedule, after.astimezone(zone))
    found: list[datetime] = []
    while len(found) < 1000:
        tick: datetime = it.get_next(datetime)
        if tick > until:
            break
        found.append(tick.astimezone(UTC))
    return found


def next_tick(schedule: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after``, in UTC."""
    from croniter import croniter

    moment: datetime = croniter(schedule, after.astimezone(ZoneInfo(timezone))).get_next(datetime)
    return moment.astimezone(UTC)


def prev_tick(schedule: str, timezone: str, before: datetime) -> datetime:
    """The last tick strictly before ``before``, in UTC."""
    from croniter import croniter

    moment: datetime = croniter(schedule, before.astimezone(ZoneInfo(timezone))).get_prev(datetime)
    return moment.astimezone(UTC)
