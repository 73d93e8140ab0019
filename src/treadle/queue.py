"""The step queue port: what gets sent to workers (ids only) and the protocol that sends it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple, Protocol


class StepRef(NamedTuple):
    """A step to advance, with its run and tenant so the worker needs no lookup first."""

    step_id: uuid.UUID
    run_id: uuid.UUID
    tenant_id: uuid.UUID


class StepQueue(Protocol):
    async def enqueue(self, steps: Sequence[StepRef]) -> None: ...
