"""Measuring one case: each workload metered (CPU per run or step from /proc) and, with
``--profile``, sampled with py-spy and its round trips counted."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import profile as profile_mod
from bench import report, workloads
from bench.client import Api
from bench.procs import (
    Process,
    cpu_seconds,
    descendants,
    machine_busy_seconds,
    pg_backends,
    pids_named,
)
from bench.report import CaseResult
from bench.w6_http import W6_STEPS, W7_CHAIN, HttpWorkloads
from bench.workloads import Sizes, Workloads

WORKLOADS: Final = ("W1", "W2", "W3", "W4", "W5", "W5B", "W6", "W7")


@dataclass(slots=True)
class Config:
    pg_url: str
    redis_url: str
    repeat: int
    sizes: Sizes
    observe: str
    logs: Path
    run_id: str
    pg_seconds: float
    profile: bool = False
    workloads: frozenset[str] = frozenset(WORKLOADS)
    w5_repeat: int = 1


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)  # noqa: T201


@dataclass(slots=True)
class CaseRun:
    """One case's workloads W1-W4, each metered: CPU per run or step, and with --profile
    py-spy samples and round-trip counts of the step-running processes (W2, W3)."""

    config: Config
    result: CaseResult
    suite: Workloads
    meter: CpuMeter
    stepper: Process  # the process (tree) that runs steps
    api: Process
    http: HttpWorkloads | None = None  # W6/W7, when a sink runs

    async def repetition(self, number: int) -> dict[str, dict[str, Any]]:
        sizes, only = self.config.sizes, self.config.workloads
        figures = {}
        if "W1" in only:
            figures["W1"] = await self._metered(
                self.suite.w1, sizes.w1_runs, "ms_per_run", f"W1-r{number}", self.api
            )
        if "W2" in only:
            w2 = self.suite.w2
            figures["W2"] = await self._metered(w2, sizes.w2_steps, profile=f"W2-r{number}")
        if "W3" in only:
            steps = sizes.w3_runs * workloads.W3_CHAIN
            figures["W3"] = await self._metered(self.suite.w3, steps, profile=f"W3-r{number}")
        if "W4" in only:
            figures["W4"] = await self._metered(self.suite.w4, sizes.w4_width + 2)
        if self.http is not None and "W6" in only:
            figures["W6"] = await self._metered(self.http.w6, W6_STEPS)
        if self.http is not None and "W7" in only:
            figures["W7"] = await self._metered(self.http.w7, self.http.runs * W7_CHAIN)
        return figures

    async def _metered(
        self,
        workload: Callable[[], Awaitable[dict[str, float]]],
        units: int,
        unit: str = "ms_per_step",
        profile: str | None = None,
        target: Process | None = None,
    ) -> dict[str, Any]:
        """Run ``workload``; with --profile and a ``profile`` label, sample ``target`` (default:
        the processes that run steps) and count the step runners' round trips."""
        sampled = target or self.stepper
        with profiling(self.config, self.result, sampled, profile):
            before, trips = await self.meter.snapshot(), await self._trips(profile)
            figures: dict[str, Any] = dict(await workload())
            figures.update(await self.meter.per_unit(before, units, unit))
            if profile is not None and self.config.profile:
                after = await self._trips(profile)
                figures.update(profile_mod.RoundTrips.per_step(trips, after, units))
        return figures

    async def _trips(self, profile: str | None) -> Counter[str]:
        if profile is None or not self.config.profile:
            return Counter()
        trips = profile_mod.RoundTrips(self.config.logs / "trace")
        return await trips.snapshot(step_pids(self.stepper))


async def run_w5(
    result: CaseResult,
    api: Api,
    api_proc: Process,
    runner: workloads.W5Runner,
    config: Config,
    *,
    wide: bool = False,
) -> dict[str, Any]:
    """W5 (one run), or with ``wide`` W5b (many subscribers spread over many runs)."""
    sizes = config.sizes
    if wide:
        figures = await workloads.w5(
            api, runner, sizes.w5b_subscribers, api_proc.pid, runs=sizes.w5b_runs, steps=5
        )
    else:
        figures = await workloads.w5(api, runner, sizes.w5_subscribers, api_proc.pid)
    bad = figures.get("incomplete_or_gapped")
    if bad:
        name = "W5b" if wide else "W5"
        note = f"{name}: {bad} of {figures.get('subscribers')} subscribers incomplete or gapped"
        errors = figures.get("errors") or []
        note += f" (errors: {'; '.join(map(str, errors))})" if errors else ""
        result.notes.append(note)
    return figures


class CpuMeter:
    """CPU time used by each part of the system (from /proc) between two points.

    ``postgres``: the server processes of this case's database; ``redis``: the whole server
    (shared); ``other``: everything else busy on the machine (other users' load shows up here).
    """

    def __init__(
        self, api: Process, worker: Process | None, pg_url: str, database_url: str | None
    ) -> None:
        self.api = api
        self.worker = worker
        self.pg_url = pg_url
        self.database_url = database_url

    async def snapshot(self) -> CpuSnapshot:
        """CPU seconds so far of each process, by part, and of the whole machine."""
        parts = {"api": self.api.tree()}
        if self.worker is not None:
            parts["worker"] = self.worker.tree()
        if self.database_url is not None:
            parts["postgres"] = await pg_backends(self.pg_url, self.database_url)
        parts["redis"] = pids_named("redis-server")
        per_pid = {part: {pid: cpu_seconds([pid]) for pid in pids} for part, pids in parts.items()}
        own = os.times()
        per_pid["client"] = {os.getpid(): own.user + own.system}
        return CpuSnapshot(per_pid, machine_busy_seconds())

    async def per_unit(
        self, before: CpuSnapshot, units: int, unit: str = "ms_per_step"
    ) -> dict[str, float]:
        """CPU milliseconds per step (or run) since ``before``, by part (``cpu_<part>_<unit>``).

        A process that appeared meanwhile counts whole; one that exited meanwhile is lost
        (database connections the pool closed), and so is counted under ``other``.
        """
        after = await self.snapshot()
        seconds = {
            part: sum(cpu - before.per_pid.get(part, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for part, pids in after.per_pid.items()
        }
        seconds["other"] = after.machine - before.machine - sum(seconds.values())
        values = {f"cpu_{part}_{unit}": value * 1000 / units for part, value in seconds.items()}
        values[f"cpu_total_{unit}"] = sum(values.values())
        return values


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    per_pid: dict[str, dict[int, float]]
    machine: float


def step_pids(proc: Process) -> list[int]:
    # A worker's children run the steps (its supervisor only watches them); dev runs them itself.
    return descendants(proc.pid) if proc.name == "treadle worker" else [proc.pid]


def profiling(
    config: Config, result: CaseResult, proc: Process, workload: str | None
) -> contextlib.AbstractContextManager[None]:
    if not config.profile or workload is None:
        return contextlib.nullcontext()
    return profile_mod.sampling(
        step_pids(proc), config.logs / "profiles", f"{result.name}-{workload}"
    )


def profile_summaries(config: Config, cases: list[CaseResult]) -> None:
    for case in cases:
        for workload in ("W1", "W2", "W3"):
            files = sorted((config.logs / "profiles").glob(f"{case.name}-{workload}-*.txt"))
            if not files:
                continue
            text = profile_mod.summarize(files)
            figures = report.stats(case.samples).get(workload, {})
            per_step = {key: stat.median for key, stat in figures.items() if "_per_step" in key}
            text += "\n" + profile_mod.round_trip_text(per_step)
            path = config.logs / f"profile-{case.name}-{workload}.txt"
            path.write_text(text + "\n")
            log(f"profile of {case.title} during {workload} ({path}):\n{text}")


def note_load(result: CaseResult) -> None:
    """Flag a case measured while other processes kept the machine busy (a shared machine)."""
    for workload in ("W2", "W3"):
        figures = report.stats(result.samples).get(workload, {})
        other, total = figures.get("cpu_other_ms_per_step"), figures.get("cpu_total_ms_per_step")
        if other is not None and total is not None and other.median > 0.2 * total.median:
            share = 100 * other.median / total.median
            result.notes.append(
                f"during {workload} other processes used {share:.0f}% of the CPU time spent:"
                " the machine was shared, figures are pessimistic"
            )
