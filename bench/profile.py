"""``--profile``: sample processes with py-spy during a workload and summarize where time goes.

py-spy is not a dependency of Treadle: install it into the venv yourself (``pip install
py-spy``). Samples are collapsed stacks (``--format raw``), one file per process and workload;
the summary lists the functions with the most samples on the stack (inclusive) and at its top
(self), which is enough to see e.g. how much of a step is spent waiting on database round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

RATE: Final = 100


def py_spy() -> str:
    path = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(path).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return path


@contextlib.contextmanager
def sampling(pids: Sequence[int], out_dir: Path, label: str, rate: int = RATE) -> Iterator[None]:
    """Record ``pids`` while the block runs; write ``<label>-<pid>.txt`` (collapsed stacks).

    Idle threads are not sampled, so the sample count over ``rate`` x seconds is how busy the
    process was; the seconds go to ``<label>-<pid>.seconds``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        output = out_dir / f"{label}-{pid}.txt"
        argv = [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        argv += ["--output", str(output), "--nonblocking"]
        procs.append(
            subprocess.Popen(  # noqa: S603 - our own argv
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    started = time.monotonic()
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        for pid in pids:
            (out_dir / f"{label}-{pid}.seconds").write_text(f"{seconds}\n")
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# Frames every sample of a worker process carries (process start-up): left out of the summary.
_LAUNCH: Final = (
    "multiprocessing/",
    "<frozen runpy>",
    "taskiq/cli/",
    "treadle/cli.py",
    "bench/traced_worker.py:main",
    "bench/traced_worker.py:<module>",
)
# Where a sample's own (top) frame sits, by path fragment, first match wins.
_AREAS: Final = (
    ("asyncpg/", "asyncpg (PostgreSQL driver)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("treadle/engine/", "treadle.engine (templates, DAG, planner)"),
    ("treadle/", "treadle (services, models, tasks)"),
    ("jinja2/", "Jinja2"),
    ("redis/", "redis-py"),
    ("taskiq", "Taskiq"),
    ("pydantic", "pydantic"),
    ("json/", "json"),
    ("bench/", "bench counters (--profile)"),
    ("asyncio/", "asyncio"),
)


def _frames(stack: str) -> list[tuple[str, str]]:
    """``(function, file)`` per frame, root first; the file relative to site-packages/src."""
    frames = []
    for frame in stack.split(";"):
        name, _, rest = frame.partition(" (")
        where = rest.rstrip(")").rsplit(":", 1)[0]
        frames.append((name, where.split("site-packages/")[-1].split("src/")[-1]))
    return frames


def _launching(frame: tuple[str, str]) -> bool:
    name, where = frame
    text = f"{where}:{name}"
    return any(fragment in text for fragment in _LAUNCH)


def _area(where: str) -> str:
    return next((label for fragment, label in _AREAS if fragment in where), "other")


def summarize(files: Sequence[Path], top: int = 15) -> str:
    """How busy the processes were; CPU samples by library, by Treadle function, by function."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    possible = 0.0
    for path in files:
        if not path.exists():
            continue
        seconds = path.with_suffix(".seconds")
        if seconds.exists():
            possible += float(seconds.read_text()) * RATE
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f for f in _frames(stack) if not _launching(f)]
            total += count
            if not frames:
                areas["no Python frame (event loop internals, C code)"] += count
                continue
            name, where = frames[-1]
            areas[_area(where)] += count
            own[f"{name} ({where})"] += count
            for frame_name, frame_where in {f for f in frames if f[1].startswith("treadle/")}:
                inclusive[f"{frame_name} ({frame_where})"] += count
    if not total:
        return "no samples"
    busy = f"{100 * total / possible:.0f}% of the time" if possible else "n/a"
    lines = [f"{total} CPU samples from {len(files)} process file(s); on CPU {busy}"]
    lines.append("CPU by where the sampled frame is (self time):")
    lines += [f"  {100 * n / total:5.1f}%  {area}" for area, n in areas.most_common()]
    lines.append("Treadle functions on the stack (inclusive):")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("hottest functions (self):")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


class RoundTrips:
    """SQL statements and Redis commands of the step-running processes (``bench.traced_worker``)
    between two snapshots."""

    def __init__(self, trace_dir: Path) -> None:
        self.trace_dir = trace_dir

    async def snapshot(self, pids: Sequence[int]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        await asyncio.sleep(0.3)
        for pid in pids:
            path = self.trace_dir / f"{pid}.json"
            if path.exists():
                for key, count in json.loads(path.read_text()).items():
                    counts[key.replace(":", "_", 1)] += count
        return counts

    @staticmethod
    def per_step(before: Counter[str], after: Counter[str], steps: int) -> dict[str, float]:
        delta = after - before
        values = {f"{key}_per_step": count / steps for key, count in delta.items()}
        for kind in ("sql", "redis"):
            total = sum(count for key, count in delta.items() if key.startswith(kind + "_"))
            values[f"{kind}_round_trips_per_step"] = total / steps
        return values


def round_trip_text(per_step: dict[str, float]) -> str:
    """``per_step`` (``sql_*_per_step`` / ``redis_*_per_step``) as two readable lines."""

    def part(prefix: str) -> str:
        items = sorted(
            (
                (key.removeprefix(prefix).removesuffix("_per_step"), value)
                for key, value in per_step.items()
                if key.startswith(prefix) and "round_trips" not in key and value >= 0.05
            ),
            key=lambda item: -item[1],
        )
        return ", ".join(f"{name} {value:.1f}" for name, value in items) or "n/a"

    sql = per_step.get("sql_round_trips_per_step", 0.0)
    redis = per_step.get("redis_round_trips_per_step", 0.0)
    return (
        f"per step (or run), by the processes that run steps (embedded: the whole server):\n"
        f"  SQL round trips {sql:.1f} ({part('sql_')})\n"
        f"  Redis round trips {redis:.1f} ({part('redis_')})"
    )
