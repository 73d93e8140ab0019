"""Aggregating repetitions (median, min, max), the stdout table and the JSON document."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

Samples = dict[str, dict[str, list[float]]]  # workload -> metric -> one value per repetition


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        return cls(statistics.median(values), min(values), max(values))


def add(samples: Samples, workload: str, values: dict[str, Any]) -> None:
    """Record one repetition's figures (numbers only) of ``workload``."""
    for metric, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            samples.setdefault(workload, {}).setdefault(metric, []).append(float(value))


def stats(samples: Samples) -> dict[str, dict[str, Stat]]:
    return {
        workload: {metric: Stat.of(values) for metric, values in metrics.items() if values}
        for workload, metrics in samples.items()
    }


@dataclass(slots=True)
class CaseResult:
    name: str
    title: str
    workers: int
    samples: Samples = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, workload: str, metric: str) -> Stat | None:
        return stats(self.samples).get(workload, {}).get(metric)


@dataclass(slots=True)
class FloorResult:
    taskiq: dict[int, Samples] = field(default_factory=dict)  # worker processes -> samples
    pg: Samples = field(default_factory=dict)

    def get(self, workers: int, workload: str, metric: str) -> Stat | None:
        samples = self.taskiq.get(workers) or self.taskiq.get(1) or {}
        return stats(samples).get(workload, {}).get(metric)

    def commit_ms(self, clients: int) -> Stat | None:
        rate = stats(self.pg).get("pg", {}).get(f"commits_per_s_{clients}")
        return None if rate is None else Stat(1000 / rate.median, 1000 / rate.high, 1000 / rate.low)


# --- the table ---------------------------------------------------------------------------------

Getter = Callable[[CaseResult, FloorResult], Stat | None]


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    value: Getter
    floor: Getter | None = None  # the same figure at the floor
    higher_is_better: bool = False


def _case(workload: str, metric: str) -> Getter:
    return lambda case, _floor: case.get(workload, metric)


def _floor(workload: str, metric: str) -> Getter:
    return lambda case, floor: floor.get(case.workers, workload, metric)


def _commits(clients: int) -> Getter:
    return lambda _case, floor: floor.commit_ms(clients)


ROWS: Final = [
    Row("W1 p50 ms", _case("W1", "p50_ms"), _floor("W1", "p50_ms")),
    Row("W1 p95 ms", _case("W1", "p95_ms"), _floor("W1", "p95_ms")),
    Row("W1 p99 ms", _case("W1", "p99_ms"), _floor("W1", "p99_ms")),
    Row("W1 p50 ms, server-side", _case("W1", "server_p50_ms")),
    Row("W2 per step ms", _case("W2", "per_step_ms"), _floor("W2", "per_step_ms")),
    Row("W2 per step, PG commits", _case("W2", "per_step_ms"), _commits(1)),
    Row("W2 total s", _case("W2", "total_s"), _floor("W2", "total_s")),
    Row("W3 steps/s", _case("W3", "steps_per_s"), _floor("W3", "steps_per_s"), True),
    Row("W3 runs/s", _case("W3", "runs_per_s"), _floor("W3", "runs_per_s"), True),
    Row("W3 ms per step, PG commits(4)", _case("W3", "ms_per_step"), _commits(4)),
    Row("W2 CPU ms/step: worker", _case("W2", "cpu_worker_ms_per_step")),
    Row("W2 CPU ms/step: API", _case("W2", "cpu_api_ms_per_step")),
    Row("W2 CPU ms/step: PostgreSQL", _case("W2", "cpu_postgres_ms_per_step")),
    Row("W2 CPU ms/step: others", _case("W2", "cpu_other_ms_per_step")),
    Row("W3 CPU ms/step: worker", _case("W3", "cpu_worker_ms_per_step")),
    Row("W3 CPU ms/step: API", _case("W3", "cpu_api_ms_per_step")),
    Row("W3 CPU ms/step: PostgreSQL", _case("W3", "cpu_postgres_ms_per_step")),
    Row("W3 CPU ms/step: bench client", _case("W3", "cpu_client_ms_per_step")),
    Row("W3 CPU ms/step: others", _case("W3", "cpu_other_ms_per_step")),
    Row("W4 total s", _case("W4", "total_s"), _floor("W4", "total_s")),
    # Real I/O: every step queued, leased, an HTTP call to the loopback sink, a fenced record.
    Row("W6 HTTP chain, per step ms", _case("W6", "per_step_ms"), _floor("W2", "per_step_ms")),
    Row("W6 CPU ms/step: worker", _case("W6", "cpu_worker_ms_per_step")),
    Row("W6 CPU ms/step: PostgreSQL", _case("W6", "cpu_postgres_ms_per_step")),
    Row("W7 HTTP runs x3, steps/s", _case("W7", "steps_per_s"), _floor("W3", "steps_per_s"), True),
    Row("W7 CPU ms/step: worker", _case("W7", "cpu_worker_ms_per_step")),
    Row("W7 CPU ms/step: API", _case("W7", "cpu_api_ms_per_step")),
    Row("W7 CPU ms/step: PostgreSQL", _case("W7", "cpu_postgres_ms_per_step")),
    Row("W5 p50 ms", _case("W5", "p50_ms")),
    Row("W5 p99 ms", _case("W5", "p99_ms")),
    Row("W5 MB per connection", _case("W5", "mb_per_connection")),
    Row("W5b subscribers (one API process)", _case("W5B", "subscribers")),
    Row("W5b p50 ms", _case("W5B", "p50_ms")),
    Row("W5b p99 ms", _case("W5B", "p99_ms")),
    Row("W5b subscribers lost/gapped", _case("W5B", "incomplete_or_gapped")),
    Row("W5b MB per connection", _case("W5B", "mb_per_connection")),
    Row("W5b API CPU busy (cores)", _case("W5B", "api_cores_busy")),
    Row("RSS API idle MB", _case("rss", "api_idle")),
    Row("RSS API peak MB", _case("rss", "api_peak")),
    Row("RSS worker idle MB/proc", _case("rss", "worker_idle"), _floor("rss", "worker_idle")),
    Row(
        "PSS worker idle MB/proc", _case("rss", "worker_idle_pss"), _floor("rss", "worker_idle_pss")
    ),
    Row("RSS worker peak MB/proc", _case("rss", "worker_peak"), _floor("rss", "worker_peak")),
    Row("RSS worker peak MB, all", _case("rss", "worker_total_peak")),
]


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _cell(stat: Stat | None, floor: Stat | None, higher_is_better: bool) -> str:
    if stat is None:
        return "—"
    text = _number(stat.median)
    if stat.high > stat.low:
        text += f" [{_number(stat.low)}-{_number(stat.high)}]"
    if floor is not None and floor.median > 0 and stat.median > 0:
        ratio = floor.median / stat.median if higher_is_better else stat.median / floor.median
        text += f" x{_number(ratio)}"
    return text


def table(cases: Sequence[CaseResult], floor: FloorResult) -> str:
    """Rows W1…RSS; a column per case (median [min-max] xratio to the floor), then the floor."""
    floor_workers = sorted(floor.taskiq)
    headers = ["", *(case.title for case in cases), *(f"floor {n}w" for n in floor_workers)]
    lines: list[list[str]] = []
    for row in ROWS:
        cells = [row.label]
        for case in cases:
            floor_stat = row.floor(case, floor) if row.floor else None
            cells.append(_cell(row.value(case, floor), floor_stat, row.higher_is_better))
        for workers in floor_workers:
            probe = CaseResult("floor", "floor", workers)
            stat = row.floor(probe, floor) if row.floor else None
            cells.append(_cell(stat, None, False))
        if any(cell != "—" for cell in cells[1:]):
            lines.append(cells)
    widths = [max(len(line[i]) for line in [headers, *lines]) for i in range(len(headers))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [fmt(headers), "  ".join("-" * width for width in widths), *map(fmt, lines)]
    pg = stats(floor.pg).get("pg", {})
    rates = ", ".join(
        f"{clients} client{'s' if clients > 1 else ''} {_number(stat.median)}/s"
        for clients in (1, 4)
        if (stat := pg.get(f"commits_per_s_{clients}")) is not None
    )
    out += [
        "",
        "Cells: median of the repetitions [min-max] xratio to the floor (how many times the floor's"
        " cost;",
        "for rates floor/measured). Floor: bare Taskiq tasks on the same Redis, same worker count"
        " (embedded: 1);",
        f"'PG commits' rows: the figure in single-row commit times (PostgreSQL: {rates or 'n/a'}).",
    ]
    for case in cases:
        out += [f"{case.title}: {note}" for note in case.notes]
    return "\n".join(out)


# --- targets -----------------------------------------------------------------------------------

TARGETS: Final = [
    ("W1 p50 ≤ 8 ms", "W1", "p50_ms", 8.0, False),
    ("W2 ≤ 1.5 ms/step", "W2", "per_step_ms", 1.5, False),
    ("W3 ≥ 900 steps/s", "W3", "steps_per_s", 900.0, True),
    ("W4 ≤ 0.12 s", "W4", "total_s", 0.12, False),
    ("idle worker RSS ≤ 80 MB", "rss", "worker_idle", 80.0, False),
]


def target_lines(case: CaseResult) -> list[str]:
    lines = []
    for label, workload, metric, bound, at_least in TARGETS:
        stat = case.get(workload, metric)
        if stat is None:
            lines.append(f"  {label}: not measured")
            continue
        met = stat.median >= bound if at_least else stat.median <= bound
        lines.append(f"  {label}: {_number(stat.median)} {'met' if met else 'MISSED'}")
    return lines


# --- JSON --------------------------------------------------------------------------------------


def _block(
    case: CaseResult, floor: FloorResult, workload: str, floor_keys: dict[str, str]
) -> dict[str, Any]:
    block: dict[str, Any] = {}
    spread: dict[str, list[float]] = {}
    for metric, stat in stats(case.samples).get(workload, {}).items():
        block[metric] = round(stat.median, 4)
        spread[metric] = [round(stat.low, 4), round(stat.high, 4)]
    for key, metric in floor_keys.items():
        floor_stat = floor.get(case.workers, workload, metric)
        block[key] = None if floor_stat is None else round(floor_stat.median, 4)
    if spread:
        block["min_max"] = spread
    return block


def case_json(case: CaseResult, floor: FloorResult) -> dict[str, Any]:
    """One case in the issue's shape: W1…W5 and rss_mb, medians, with min/max and the floor."""
    w5 = _block(case, floor, "W5", {})
    for key in ("p50_ms", "p99_ms"):
        w5.setdefault(key, None)
    return {
        "W1": _block(case, floor, "W1", {"floor_p50_ms": "p50_ms", "floor_p99_ms": "p99_ms"}),
        "W2": _block(case, floor, "W2", {"floor_per_step_ms": "per_step_ms"}),
        "W3": _block(case, floor, "W3", {"floor_steps_per_s": "steps_per_s"}),
        "W4": _block(case, floor, "W4", {"floor_total_s": "total_s"}),
        "W5": w5,
        "W5b": _block(case, floor, "W5B", {}),
        "W6": _block(case, floor, "W6", {}),
        "W7": _block(case, floor, "W7", {}),
        "rss_mb": _block(case, floor, "rss", {"floor_worker_idle": "worker_idle"}),
        "workers": case.workers,
        "notes": case.notes,
    }


def document(
    cases: Sequence[CaseResult], floor: FloorResult, meta: dict[str, Any]
) -> dict[str, Any]:
    """The Postgres + Redis one-worker case at the top level, every case under its own key."""
    doc: dict[str, Any] = {}
    by_name = {case.name: case for case in cases}
    main = by_name.get("pg1") or (cases[0] if cases else None)
    if main is not None:
        doc.update(case_json(main, floor))
        doc["case"] = main.name
    for case in cases:
        doc[case.name] = case_json(case, floor)
    doc["floor"] = {
        "taskiq": {f"{n}w": _floor_json(samples) for n, samples in floor.taskiq.items()},
        "pg": _floor_json(floor.pg).get("pg", {}),
    }
    doc["meta"] = meta
    return doc


def _floor_json(samples: Samples) -> dict[str, Any]:
    return {
        workload: {
            metric: {"median": stat.median, "min": stat.low, "max": stat.high}
            for metric, stat in metrics.items()
        }
        for workload, metrics in stats(samples).items()
    }
