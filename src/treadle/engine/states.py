"""Run and step statuses, event types, and the step state machine."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from treadle.errors import IllegalTransitionError


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"


class EventType(StrEnum):
    RUN_CREATED = "RUN_CREATED"
    RUN_STARTED = "RUN_STARTED"
    STEP_STARTED = "STEP_STARTED"
    STEP_COMPLETED = "STEP_COMPLETED"
    STEP_RETRYING = "STEP_RETRYING"
    STEP_FAILED = "STEP_FAILED"
    STEP_SKIPPED = "STEP_SKIPPED"
    STEP_CANCELLED = "STEP_CANCELLED"
    RUN_COMPLETED = "RUN_COMPLETED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"
    RUN_RESUMED = "RUN_RESUMED"  # a rerun: a new attempt of a FAILED or CANCELLED run
    STEP_WAITING = "STEP_WAITING"  # a step (APPROVAL) waits for someone outside the run


TERMINAL_RUN: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
TERMINAL_STEP: Final = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
TERMINAL_EVENTS: Final = frozenset(
    {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)

ALLOWED: Final[Mapping[StepStatus, frozenset[StepStatus]]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELLED}),
    StepStatus.RUNNING: frozenset(
        {
            StepStatus.RUNNING,  # a new attempt after the previous one's lease expired
            StepStatus.COMPLETED,
            StepStatus.FAILED,
            StepStatus.RETRYING,
            StepStatus.CANCELLED,
        }
    ),
    StepStatus.RETRYING: frozenset({StepStatus.RUNNING, StepStatus.CANCELLED}),
}


def transition(current: StepStatus, target: StepStatus) -> StepStatus:
    """Return ``target`` when the step state machine allows ``current -> target``."""
    if target not in ALLOWED.get(current, frozenset()):
        raise IllegalTransitionError(f"step cannot move from {current} to {target}")
    return target
