"""The hot path's rows: a run, its steps and its new events as plain objects, read and written
with plain statements (no ORM unit of work).

Invariants:
- ``lock_and_load`` holds the run row's lock (PostgreSQL: ``FOR UPDATE``; SQLite: the immediate
  transaction) and returns the steps as they are under that lock. On PostgreSQL one statement
  locks the run and reads its steps; when it had to wait for another writer of the run, the
  steps it read may predate that writer, so it reads them again. That is sound because every
  write of a run's steps under the lock also writes the run row (``write`` makes sure), so a
  changed run row version is how a concurrent writer shows.
- ``write`` sends what changed in one statement on PostgreSQL (the run row, the steps through
  ``unnest``, the events through ``unnest``; data-modifying CTEs) and with executemany on SQLite.
  ``insert_new`` does the same for a new run, its steps and its first events.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection

from treadle.db import AsyncSession
from treadle.engine.dagcache import DagKey
from treadle.engine.json import JSON, JSONObject
from treadle.models import WorkflowEvent, WorkflowRun, WorkflowStep
from treadle.services.views import EventView, RunView, StepView

RUN_STATE: Final = (
    "status",
    "input",
    "output",
    "error",
    "idempotency_key",
    "last_seq",
    "started_at",
    "finished_at",
)
STEP_STATE: Final = (
    "status",
    "attempt",
    "attempt_base",
    "output",
    "error",
    "due_at",
    "wake_at",
    "lease_until",
    "started_at",
    "finished_at",
)
STEP_KEY: Final = ("id", "tenant_id", "run_id", "node_id", "type")
EVENT_COLUMNS: Final = ("id", "tenant_id", "run_id", "seq", "type", "node_id", "data", "created_at")


@dataclass(slots=True, eq=False)
class RunRow:
    id: uuid.UUID
    tenant_id: uuid.UUID
    workflow_id: uuid.UUID
    workflow_version: int
    definition: JSONObject
    status: str
    input: JSON
    output: JSON
    error: JSON
    idempotency_key: str | None
    last_seq: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    saved: tuple[Any, ...] | None = None  # RUN_STATE as stored; None: not stored yet

    def state(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.input,
            self.output,
            self.error,
            self.idempotency_key,
            self.last_seq,
            self.started_at,
            self.finished_at,
        )


@dataclass(slots=True, eq=False)
class StepRow:
    id: uuid.UUID
    tenant_id: uuid.UUID
    run_id: uuid.UUID
    node_id: str
    type: str
    status: str
    attempt: int = 0
    attempt_base: int = 0
    output: JSON = None
    error: JSON = None
    due_at: datetime | None = None
    wake_at: datetime | None = None
    lease_until: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    saved: tuple[Any, ...] | None = None  # STEP_STATE as stored; None: not stored yet

    def state(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.attempt,
            self.attempt_base,
            self.output,
            self.error,
            self.due_at,
            self.wake_at,
            self.lease_until,
            self.started_at,
            self.finished_at,
        )


@dataclass(frozen=True, slots=True)
class EventRow:
    id: uuid.UUID
    tenant_id: uuid.UUID
    run_id: uuid.UUID
    seq: int
    type: str
    node_id: str | None
    data: JSON
    created_at: datetime

    def view(self) -> EventView:
        return EventView.of(self)


def run_view(run: RunRow, steps: Mapping[str, StepRow], order: Sequence[str]) -> RunView:
    return RunView(
        id=run.id,
        tenant_id=run.tenant_id,
        workflow_id=run.workflow_id,
        workflow_version=run.workflow_version,
        status=run.status,
        input=run.input,
        output=run.output,
        error=run.error,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        steps=tuple(StepView.of(steps[node]) for node in order if node in steps),
    )


# --- reading ------------------------------------------------------------------------------------

_RUN_COLUMNS: Final = (
    "r.tenant_id, r.workflow_id, r.workflow_version, r.status, r.input, r.output, r.error, "
    "r.idempotency_key, r.last_seq, r.created_at, r.started_at, r.finished_at"
)
_STEP_COLUMNS: Final = (
    "s.id, s.node_id, s.type, s.status, s.attempt, s.attempt_base, s.output, s.error, "
    "s.due_at, s.wake_at, s.lease_until, s.started_at, s.finished_at"
)
# ``fresh``: the locked run row is the version this statement's snapshot sees, so nobody wrote
# the run (and so its steps) between the snapshot and the lock.
_LOCK_AND_LOAD: Final = (
    f"SELECT {_RUN_COLUMNS}, "  # noqa: S608 - constants only
    "r.xmin::text = (SELECT xmin::text FROM workflow_runs WHERE id = $1) AS fresh, "
    f"{_STEP_COLUMNS} "
    "FROM workflow_runs r LEFT JOIN workflow_steps s ON s.run_id = r.id "
    "WHERE r.id = $1 FOR UPDATE OF r"
)
_STEPS: Final = f"SELECT {_STEP_COLUMNS} FROM workflow_steps s WHERE s.run_id = $1"  # noqa: S608
_DEFINITION: Final = "SELECT definition FROM workflow_runs WHERE id = $1"

_RUNS: Final = cast(Table, WorkflowRun.__table__)
_STEPS_T: Final = cast(Table, WorkflowStep.__table__)
_EVENTS: Final = cast(Table, WorkflowEvent.__table__)

# (workflow id, version) names one definition for good (see engine.dagcache): fetched once.
_definitions: OrderedDict[DagKey, JSONObject] = OrderedDict()
_DEFINITIONS_KEPT: Final = 512


def _dump(value: JSON) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


async def lock_and_load(
    session: AsyncSession, run_id: uuid.UUID, *, postgres: bool
) -> tuple[RunRow, dict[str, StepRow]]:
    """The run, locked, and its steps by node id. Raises ``NoResultFound`` for no such run."""
    conn = await session.connection()
    if not postgres:
        return await _load_portable(conn, run_id)
    rows = (await conn.exec_driver_sql(_LOCK_AND_LOAD, (run_id,))).all()
    if not rows:
        raise NoResultFound("no such run")
    head: Sequence[Any] = rows[0]
    definition = await _definition(conn, (head[1], head[2]), run_id)
    # The driver decodes jsonb columns (SQLAlchemy's codec); it wants them encoded as text.
    run = RunRow(
        run_id, head[0], head[1], head[2], definition, head[3], head[4], head[5], head[6],
        head[7], head[8], head[9], head[10], head[11],
    )  # fmt: skip
    run.saved = run.state()
    if not head[12]:  # another writer of the run committed while this one waited for the lock
        rows = (await conn.exec_driver_sql(_STEPS, (run_id,))).all()
        offset = 0
    else:
        offset = 13
    steps = {}
    for row in rows:
        if row[offset] is None:
            continue  # a run without steps
        step = _step_of(run, row, offset)
        steps[step.node_id] = step
    return run, steps


def _step_of(run: RunRow, row: Sequence[Any], at: int) -> StepRow:
    step = StepRow(
        row[at], run.tenant_id, run.id, row[at + 1], row[at + 2], row[at + 3], row[at + 4],
        row[at + 5], row[at + 6], row[at + 7], row[at + 8], row[at + 9],
        row[at + 10], row[at + 11], row[at + 12],
    )  # fmt: skip
    step.saved = step.state()
    return step


async def _definition(conn: AsyncConnection, key: DagKey, run_id: uuid.UUID) -> JSONObject:
    definition = _definitions.get(key)
    if definition is None:
        definition = (await conn.exec_driver_sql(_DEFINITION, (run_id,))).scalar_one()
        _definitions[key] = definition
        if len(_definitions) > _DEFINITIONS_KEPT:
            _definitions.popitem(last=False)
    return definition


async def _load_portable(
    conn: AsyncConnection, run_id: uuid.UUID
) -> tuple[RunRow, dict[str, StepRow]]:
    """SQLite: the immediate transaction already serialises writers; two plain selects."""
    runs, steps_t = _RUNS, _STEPS_T
    head = (await conn.execute(select(runs).where(runs.c.id == run_id))).mappings().one()
    run = RunRow(**{key: head[key] for key in _RUN_FIELDS})
    run.saved = run.state()
    steps = {}
    for found in (await conn.execute(select(steps_t).where(steps_t.c.run_id == run_id))).mappings():
        step = StepRow(**{key: found[key] for key in (*STEP_KEY, *STEP_STATE)})
        step.saved = step.state()
        steps[step.node_id] = step
    return run, steps


_RUN_FIELDS: Final = (
    "id",
    "tenant_id",
    "workflow_id",
    "workflow_version",
    "definition",
    *RUN_STATE,
    "created_at",
)


# --- writing ------------------------------------------------------------------------------------


async def write(
    session: AsyncSession,
    run: RunRow,
    steps: Mapping[str, StepRow],
    events: Sequence[EventRow],
    *,
    postgres: bool,
) -> None:
    """Store what changed since the load (or the last write) and the new events."""
    changed = [row for row in steps.values() if row.saved != row.state()]
    if not changed and not events and run.saved == run.state():
        return
    conn = await session.connection()
    if postgres:
        await _write_pg(conn, run, changed, events)
    else:
        await _write_portable(conn, run, changed, events)
    run.saved = run.state()
    for row in changed:
        row.saved = row.state()


async def insert_new(
    session: AsyncSession,
    run: RunRow,
    steps: Mapping[str, StepRow],
    events: Sequence[EventRow],
    *,
    postgres: bool,
) -> None:
    """Insert a new run with its steps and first events (PostgreSQL: one statement)."""
    conn = await session.connection()
    rows = list(steps.values())
    if postgres:
        sql = _insert_sql(bool(rows), bool(events))
        params = (
            *_run_insert_params(run),
            *_steps_params(rows, insert=True),
            *_events_params(events),
        )
        await conn.exec_driver_sql(sql, tuple(params))
    else:
        await conn.execute(insert(_RUNS), [_run_dict(run)])
        if rows:
            await conn.execute(insert(_STEPS_T), [_step_dict(r) for r in rows])
        if events:
            await conn.execute(insert(_EVENTS), [_event_dict(e) for e in events])
    run.saved = run.state()
    for row in rows:
        row.saved = row.state()


_STEP_UNNEST: Final = (
    "unnest({}::uuid[], {}::text[], {}::int[], {}::int[], {}::text[], {}::text[], "
    "{}::timestamptz[], {}::timestamptz[], {}::timestamptz[], {}::timestamptz[], "
    "{}::timestamptz[]) AS u(id, status, attempt, attempt_base, output, error, due_at, wake_at, "
    "lease_until, started_at, finished_at)"
)
_STEP_INSERT_UNNEST: Final = (
    "unnest({}::uuid[], {}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::text[], {}::int[], "
    "{}::int[], {}::text[], {}::text[], {}::timestamptz[], {}::timestamptz[], "
    "{}::timestamptz[], {}::timestamptz[], {}::timestamptz[]) AS u(id, tenant_id, run_id, "
    "node_id, type, status, attempt, attempt_base, output, error, due_at, wake_at, lease_until, "
    "started_at, finished_at)"
)
_EVENT_INSERT: Final = (
    "INSERT INTO workflow_events (id, tenant_id, run_id, seq, type, node_id, data, created_at) "
    "SELECT u.id, {}::uuid, {}::uuid, u.seq, u.type, u.node_id, u.data::jsonb, u.created_at "
    "FROM unnest({}::uuid[], {}::int[], {}::text[], {}::text[], {}::text[], {}::timestamptz[]) "
    "AS u(id, seq, type, node_id, data, created_at)"
)


def _numbered(template: str, first: int) -> tuple[str, int]:
    count = template.count("{}")
    return template.format(*(f"${n}" for n in range(first, first + count))), first + count


def _chain(parts: list[str]) -> str:
    """One statement of several: all but the last as data-modifying CTEs."""
    if len(parts) == 1:
        return parts[0]
    ctes = ", ".join(f"w{n} AS ({part})" for n, part in enumerate(parts[:-1]))
    return f"WITH {ctes} {parts[-1]}"


@functools.cache
def _write_sql(with_steps: bool, with_events: bool) -> str:
    run, n = _numbered(
        "UPDATE workflow_runs SET status = {}, input = {}::jsonb, output = {}::jsonb, "
        "error = {}::jsonb, idempotency_key = {}, last_seq = {}, started_at = {}, "
        "finished_at = {} WHERE id = {}",
        1,
    )
    parts = [run]
    if with_steps:
        unnest, n = _numbered(_STEP_UNNEST, n)
        parts.append(
            "UPDATE workflow_steps t SET status = u.status, attempt = u.attempt, "  # noqa: S608
            "attempt_base = u.attempt_base, output = u.output::jsonb, error = u.error::jsonb, "
            "due_at = u.due_at, wake_at = u.wake_at, lease_until = u.lease_until, "
            f"started_at = u.started_at, finished_at = u.finished_at FROM {unnest} "
            "WHERE t.id = u.id"
        )
    if with_events:
        parts.append(_numbered(_EVENT_INSERT, n)[0])
    return _chain(parts)


@functools.cache
def _insert_sql(with_steps: bool, with_events: bool) -> str:
    run, n = _numbered(
        "INSERT INTO workflow_runs (id, tenant_id, workflow_id, workflow_version, definition, "
        "status, input, output, error, idempotency_key, last_seq, created_at, started_at, "
        "finished_at) VALUES ({}, {}, {}, {}, {}::jsonb, {}, {}::jsonb, {}::jsonb, {}::jsonb, "
        "{}, {}, {}, {}, {})",
        1,
    )
    parts = [run]
    if with_steps:
        unnest, n = _numbered(_STEP_INSERT_UNNEST, n)
        parts.append(
            "INSERT INTO workflow_steps (id, tenant_id, run_id, node_id, type, status, attempt, "  # noqa: S608
            "attempt_base, output, error, due_at, wake_at, lease_until, started_at, finished_at) "
            "SELECT u.id, u.tenant_id, u.run_id, u.node_id, u.type, u.status, u.attempt, "
            "u.attempt_base, u.output::jsonb, u.error::jsonb, u.due_at, u.wake_at, "
            f"u.lease_until, u.started_at, u.finished_at FROM {unnest}"
        )
    if with_events:
        parts.append(_numbered(_EVENT_INSERT, n)[0])
    return _chain(parts)


async def _write_pg(
    conn: AsyncConnection, run: RunRow, steps: list[StepRow], events: Sequence[EventRow]
) -> None:
    # The run row is written even when only steps changed: see the module's invariants.
    params: list[Any] = [
        run.status, _dump(run.input), _dump(run.output), _dump(run.error), run.idempotency_key,
        run.last_seq, run.started_at, run.finished_at, run.id,
    ]  # fmt: skip
    params += _steps_params(steps, insert=False)
    params += _events_params(events)
    await conn.exec_driver_sql(_write_sql(bool(steps), bool(events)), tuple(params))


def _steps_params(steps: Sequence[StepRow], *, insert: bool) -> list[Any]:
    if not steps:
        return []
    key: list[Any] = [[row.id for row in steps]]
    if insert:
        key += [
            [row.tenant_id for row in steps],
            [row.run_id for row in steps],
            [row.node_id for row in steps],
            [row.type for row in steps],
        ]
    return [
        *key,
        [row.status for row in steps],
        [row.attempt for row in steps],
        [row.attempt_base for row in steps],
        [_dump(row.output) for row in steps],
        [_dump(row.error) for row in steps],
        [row.due_at for row in steps],
        [row.wake_at for row in steps],
        [row.lease_until for row in steps],
        [row.started_at for row in steps],
        [row.finished_at for row in steps],
    ]


def _events_params(events: Sequence[EventRow]) -> list[Any]:
    if not events:
        return []
    first = events[0]
    return [
        first.tenant_id,
        first.run_id,
        [e.id for e in events],
        [e.seq for e in events],
        [e.type for e in events],
        [e.node_id for e in events],
        [_dump(e.data) for e in events],
        [e.created_at for e in events],
    ]


def _run_insert_params(run: RunRow) -> list[Any]:
    return [
        run.id, run.tenant_id, run.workflow_id, run.workflow_version, _dump(run.definition),
        run.status, _dump(run.input), _dump(run.output), _dump(run.error), run.idempotency_key,
        run.last_seq, run.created_at, run.started_at, run.finished_at,
    ]  # fmt: skip


def _run_dict(run: RunRow) -> dict[str, Any]:
    return {key: getattr(run, key) for key in _RUN_FIELDS}


def _step_dict(row: StepRow) -> dict[str, Any]:
    return {key: getattr(row, key) for key in (*STEP_KEY, *STEP_STATE)}


def _event_dict(event: EventRow) -> dict[str, Any]:
    return {key: getattr(event, key) for key in EVENT_COLUMNS}


async def _write_portable(
    conn: AsyncConnection, run: RunRow, steps: list[StepRow], events: Sequence[EventRow]
) -> None:
    runs, steps_t = _RUNS, _STEPS_T
    await conn.execute(
        update(runs).where(runs.c.id == run.id).values({k: getattr(run, k) for k in RUN_STATE})
    )
    if steps:
        stmt = (
            update(steps_t)
            .where(steps_t.c.id == bindparam("key_id"))
            .values({k: bindparam(f"new_{k}") for k in STEP_STATE})
        )
        batch = [
            {"key_id": row.id, **{f"new_{k}": getattr(row, k) for k in STEP_STATE}} for row in steps
        ]
        await conn.execute(stmt, batch)
    if events:
        await conn.execute(insert(_EVENTS), [_event_dict(e) for e in events])
