"""The checks at the end, from the database, the sink and the subscribers, and the table."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]

from chaos.subscribers import TERMINAL, Follower
from chaos.workload import HTTP_NODES
from tests.fakes.sink import Recorded

TERMINAL_RUN: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# Nothing in the workflow waits this long (delay 1.5 s, backoff <= 1 s, lease 3 s): a quiet
# stretch this long in a run's history is a lost queue message waiting for the reaper.
STALL_SECONDS: Final = 10.0
FAULT_SLACK: Final = 0.1  # seconds: a fault stamped just before the STEP_STARTED commit landed


@dataclass
class Faults:
    """What was injected, with wall-clock times (``time.time()``)."""

    kills: list[float] = field(default_factory=list)
    victims: list[str] = field(default_factory=list)  # which worker each kill hit
    redis_restarts: list[tuple[float, float]] = field(default_factory=list)  # (at, down s)
    pg_terminations: list[tuple[float, int]] = field(default_factory=list)  # (at, backends)
    api_kills: list[tuple[float, int, int]] = field(default_factory=list)  # (at, api, attached)
    unexpected_exits: Counter[str] = field(default_factory=Counter)  # child -> times found dead
    seconds: float = 0.0  # length of the fault phase

    def times(self) -> list[tuple[float, str]]:
        """Faults that can cost a step its attempt, in time order, with their kind."""
        points = [(at, "worker kill") for at in self.kills]
        points += [(at, "redis restart") for at, _ in self.redis_restarts]
        points += [(at, "pg terminate") for at, _ in self.pg_terminations]
        return sorted(points)


@dataclass
class Snapshot:
    """The database's view at the end."""

    runs: list[dict[str, Any]]
    events: dict[str, list[dict[str, Any]]]  # run id -> events in seq order
    steps: list[dict[str, Any]]


async def snapshot(dsn: str, workflow_id: str) -> Snapshot:
    """The main workload's runs, events and steps (the extra workloads are judged apart)."""
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch(
            "SELECT id::text AS id, status, error::text AS error, created_at, finished_at, "
            "last_seq FROM workflow_runs WHERE workflow_id = $1::uuid",
            workflow_id,
        )
        events = await conn.fetch(
            "SELECT run_id::text AS run_id, seq, type, node_id, data::text AS data, created_at "
            "FROM workflow_events WHERE run_id IN "
            "(SELECT id FROM workflow_runs WHERE workflow_id = $1::uuid) ORDER BY run_id, seq",
            workflow_id,
        )
        steps = await conn.fetch(
            "SELECT run_id::text AS run_id, node_id, type, status, attempt FROM workflow_steps "
            "WHERE run_id IN (SELECT id FROM workflow_runs WHERE workflow_id = $1::uuid)",
            workflow_id,
        )
    finally:
        await conn.close()
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in events:
        event = dict(row)
        event["data"] = json.loads(event["data"]) if event["data"] else None
        by_run[event["run_id"]].append(event)
    return Snapshot([dict(r) for r in runs], dict(by_run), [dict(s) for s in steps])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _stamp(moment: datetime) -> float:
    return moment.timestamp()


@dataclass
class Row:
    name: str
    value: str
    verdict: str = ""  # "ok", "FAIL" or "" for information


@dataclass
class Verdict:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # details printed after the table (stderr)

    @property
    def passed(self) -> bool:
        return all(row.verdict != "FAIL" for row in self.rows)

    def check(self, name: str, value: str, ok: bool) -> None:
        self.rows.append(Row(name, value, "ok" if ok else "FAIL"))

    def info(self, name: str, value: str) -> None:
        self.rows.append(Row(name, value))

    def table(self) -> str:
        width = max(len(row.name) for row in self.rows)
        vwidth = max(len(row.value) for row in self.rows)
        line = "-" * (width + vwidth + 10)
        out = [f"{'check':<{width}}  {'value':>{vwidth}}  result", line]
        out += [f"{r.name:<{width}}  {r.value:>{vwidth}}  {r.verdict}".rstrip() for r in self.rows]
        out.append(line)
        out.append(f"{'verdict':<{width}}  {'PASS' if self.passed else 'FAIL':>{vwidth}}")
        return "\n".join(out)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def judge(
    expected_runs: int,
    db: Snapshot,
    requests: Iterable[Recorded],
    followers: Sequence[Follower],
    faults: Faults,
    min_kills: int,
) -> Verdict:
    verdict = Verdict()
    _runs(verdict, expected_runs, db)
    _effects(verdict, db, list(requests))
    restart_at = faults.redis_restarts[0][0] if faults.redis_restarts else None
    _subscribers(verdict, db, followers, restart_at)
    _history(verdict, db)
    _recovery(verdict, db, faults)
    _faults(verdict, faults, min_kills)
    return verdict


def _runs(verdict: Verdict, expected: int, db: Snapshot) -> None:
    statuses = Counter(run["status"] for run in db.runs)
    started, completed = len(db.runs), statuses["COMPLETED"]
    verdict.check(
        "runs completed / started",
        f"{completed}/{started}",
        completed == started == expected,
    )
    stuck = [run for run in db.runs if run["status"] not in TERMINAL_RUN]
    verdict.check("stuck runs", str(len(stuck)), not stuck)
    if statuses["FAILED"] or statuses["CANCELLED"]:
        verdict.info("runs failed / cancelled", f"{statuses['FAILED']}/{statuses['CANCELLED']}")
    for run in [r for r in db.runs if r["status"] == "FAILED"][:10]:
        verdict.notes.append(f"failed run {run['id']}: {run['error']}")
    for run in stuck[:10]:
        open_steps = [
            f"{s['node_id']}={s['status']}#{s['attempt']}"
            for s in db.steps
            if s["run_id"] == run["id"] and s["status"] not in ("COMPLETED", "SKIPPED")
        ]
        verdict.notes.append(f"stuck run {run['id']} ({run['status']}): {' '.join(open_steps)}")
    durations = [
        _stamp(run["finished_at"]) - _stamp(run["created_at"])
        for run in db.runs
        if run["status"] == "COMPLETED" and run["finished_at"] is not None
    ]
    verdict.info(
        "run duration p50 / p99 / max",
        " / ".join(_seconds(percentile(durations, q)) for q in (50, 99, 100)),
    )


def _effects(verdict: Verdict, db: Snapshot, requests: list[Recorded]) -> None:
    keys = Counter(r.headers.get("idempotency-key") for r in requests)
    unkeyed = keys.pop(None, 0)
    duplicated = {key: count for key, count in keys.items() if count > 1}
    verdict.check("duplicate side effects (keys seen twice)", str(len(duplicated)), not duplicated)
    for key, count in sorted(duplicated.items())[:10]:
        verdict.notes.append(f"idempotency key {key} reached the sink {count} times")
    missing = [
        f"{s['run_id']}:{s['node_id']}:{s['attempt']}"
        for s in db.steps
        if s["node_id"] in HTTP_NODES and s["status"] == "COMPLETED"
    ]
    missing = [key for key in missing if key not in keys]
    verdict.check("effects missing at sink", str(len(missing)), not missing and not unkeyed)
    for key in missing[:10]:
        verdict.notes.append(f"completed step {key} never reached the sink")
    verdict.info("sink requests (distinct keys)", f"{len(requests)} ({len(keys)})")


def _subscribers(
    verdict: Verdict, db: Snapshot, followers: Sequence[Follower], restart_at: float | None
) -> None:
    last_seq = {run["id"]: run["last_seq"] for run in db.runs}
    gaps = dups = disorder = unfinished = 0
    for follower in followers:
        seen: set[int] = set()
        highest = 0
        for seq in follower.received:
            if seq in seen:
                dups += 1
            elif seq < highest:
                disorder += 1
            seen.add(seq)
            highest = max(highest, seq)
        missing = set(range(1, last_seq.get(follower.run_id, 0) + 1)) - seen
        gaps += len(missing)
        if missing:
            verdict.notes.append(
                f"subscriber of run {follower.run_id} missed seqs {sorted(missing)[:20]}"
            )
        if not follower.terminal:
            unfinished += 1
    verdict.check("event gaps (subscribers)", str(gaps), gaps == 0)
    verdict.check("event duplicates (subscribers)", str(dups), dups == 0)
    verdict.check("events out of order (subscribers)", str(disorder), disorder == 0)
    verdict.check(
        "subscribers without terminal event", f"{unfinished}/{len(followers)}", unfinished == 0
    )
    reconnects = sum(max(0, f.connections - 1) for f in followers)
    waits = [s for f in followers for s in f.reconnect_seconds]
    verdict.info(
        "subscriber reconnects (max wait)",
        f"{reconnects} ({_seconds(max(waits, default=None))})",
    )
    latencies = [pair for f in followers for pair in f.latencies]
    verdict.info(
        "event delivery p50 / p99 (subscribers)",
        " / ".join(_seconds(percentile([s for _, s in latencies], q)) for q in (50, 99)),
    )
    if restart_at is not None:
        after = [s for created, s in latencies if created > restart_at + 2]
        verdict.info(
            "  the same after the Redis restart",
            " / ".join(_seconds(percentile(after, q)) for q in (50, 99)),
        )
    reasons = sum((f.failures for f in followers), Counter[str]())
    if reasons:
        verdict.notes.append(
            "subscriber disconnect reasons: "
            + ", ".join(f"{k}={v}" for k, v in reasons.most_common())
        )


def _history(verdict: Verdict, db: Snapshot) -> None:
    bad = 0
    for run in db.runs:
        events = db.events.get(run["id"], [])
        seqs = [e["seq"] for e in events]
        terminal = sum(1 for e in events if e["type"] in TERMINAL)
        expected_terminal = 1 if run["status"] in TERMINAL_RUN else 0
        if seqs != list(range(1, run["last_seq"] + 1)) or terminal != expected_terminal:
            bad += 1
            verdict.notes.append(
                f"run {run['id']}: seqs {seqs[:5]}..{seqs[-3:]} last_seq {run['last_seq']}, "
                f"{terminal} terminal events"
            )
    verdict.check("runs with a broken event history (DB)", str(bad), bad == 0)
    stalls = [
        _stamp(later["created_at"]) - _stamp(earlier["created_at"])
        for events in db.events.values()
        for earlier, later in itertools.pairwise(events)
        if _stamp(later["created_at"]) - _stamp(earlier["created_at"]) > STALL_SECONDS
    ]
    verdict.info(
        f"history stalls > {STALL_SECONDS:g} s (longest)",
        f"{len(stalls)} ({_seconds(max(stalls, default=None))})",
    )


def _recovery(verdict: Verdict, db: Snapshot, faults: Faults) -> None:
    points = faults.times()
    recoveries: list[float] = []
    slow: list[tuple[float, str]] = []
    lost = unexplained = http_retries = 0
    for events in db.events.values():
        started = {
            (e["node_id"], e["data"]["attempt"]): _stamp(e["created_at"])
            for e in events
            if e["type"] == "STEP_STARTED"
        }
        for event in events:
            if event["type"] != "STEP_RETRYING":
                continue
            code = (event["data"].get("error") or {}).get("code")
            if code != "WORKER_LOST":
                http_retries += 1
                continue
            lost += 1
            begin = started.get((event["node_id"], event["data"]["attempt"]))
            moved_on = _stamp(event["created_at"])
            cause = next(
                (
                    (at, kind)
                    for at, kind in points
                    if begin is not None and begin - FAULT_SLACK <= at <= moved_on
                ),
                None,
            )
            if cause is None:
                unexplained += 1
                continue
            recoveries.append(moved_on - cause[0])
            slow.append(
                (
                    moved_on - cause[0],
                    f"{event['run_id']}:{event['node_id']}:{event['data']['attempt']} "
                    f"after {cause[1]} at {cause[0]:.1f}",
                )
            )
    for seconds, what in sorted(slow, reverse=True)[:5]:
        verdict.notes.append(f"recovery {seconds:.1f} s: {what}")
    verdict.info("attempts lost to faults (WORKER_LOST)", str(lost))
    verdict.info("leases lost without a fault", str(unexplained))
    verdict.info("other retries (HTTP 503 etc.)", str(http_retries))
    verdict.info(
        "recovery time p50 / p99",
        f"{_seconds(percentile(recoveries, 50))} / {_seconds(percentile(recoveries, 99))}",
    )


def _faults(verdict: Verdict, faults: Faults, min_kills: int) -> None:
    """The faults themselves are checked too: a quiet run proves nothing."""
    kills = len(faults.kills)
    verdict.check("worker SIGKILLs", f"{kills} (>= {min_kills})", kills >= min_kills)
    verdict.check(
        "Redis restarts (down for)",
        ", ".join(f"1 ({down:.1f} s)" for _, down in faults.redis_restarts) or "0",
        len(faults.redis_restarts) == 1,
    )
    verdict.check(
        "PostgreSQL backends terminated",
        ", ".join(str(n) for _, n in faults.pg_terminations) or "0",
        any(n > 0 for _, n in faults.pg_terminations),
    )
    verdict.check(
        "API SIGKILL under live subscribers",
        ", ".join(f"api{api}, {n} attached" for _, api, n in faults.api_kills) or "none",
        any(n > 0 for _, _, n in faults.api_kills),
    )
    verdict.info("fault phase", f"{faults.seconds:.0f} s")
    if faults.unexpected_exits:
        verdict.notes.append(
            "children found dead without being killed: "
            + ", ".join(f"{k}={v}" for k, v in faults.unexpected_exits.items())
        )
