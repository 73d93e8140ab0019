"""``treadle worker`` that counts its round trips (``python -m bench --profile`` only).

``python -m bench.traced_worker worker …`` is ``treadle worker …`` (or ``dev …``) plus counters
installed before the worker forks its processes: SQLAlchemy listeners count BEGIN, each statement
(by its first word) and COMMIT/ROLLBACK; a wrapper around redis-py counts each Redis command
(a pipeline counts once). On SIGUSR1 a process writes its counts to
``$BENCH_TRACE_DIR/<pid>.json``; the benchmark signals the processes before and after a workload
and divides the difference by the steps run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from redis.asyncio.client import Pipeline, Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine

COUNTS: Counter[str] = Counter()
_execute_command = Redis.execute_command
_execute_pipeline = Pipeline.execute


async def _counted_command(self: Redis, *args: Any, **options: Any) -> Any:
    COUNTS[f"redis:{str(args[0]).lower()}" if args else "redis:?"] += 1
    return await _execute_command(self, *args, **options)  # type: ignore[no-untyped-call]


async def _counted_pipeline(self: Pipeline, raise_on_error: bool = True) -> Any:
    COUNTS["redis:pipeline"] += 1
    return await _execute_pipeline(self, raise_on_error)


Redis.execute_command = _counted_command  # type: ignore[method-assign]
Pipeline.execute = _counted_pipeline  # type: ignore[method-assign]


@event.listens_for(Engine, "begin")
def _begin(conn: Any) -> None:
    COUNTS["sql:begin"] += 1


@event.listens_for(Engine, "commit")
def _commit(conn: Any) -> None:
    COUNTS["sql:commit"] += 1


@event.listens_for(Engine, "rollback")
def _rollback(conn: Any) -> None:
    COUNTS["sql:rollback"] += 1


@event.listens_for(Engine, "before_cursor_execute")
def _statement(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    verb = statement.split(None, 1)[0].lower() if statement.strip() else "?"
    COUNTS[f"sql:{verb}"] += 1


def _dump(signum: int, frame: FrameType | None) -> None:
    path = Path(os.environ["BENCH_TRACE_DIR"]) / f"{os.getpid()}.json"
    path.write_text(json.dumps(COUNTS))


def main() -> int:
    from treadle.cli import main as treadle_main

    Path(os.environ["BENCH_TRACE_DIR"]).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGUSR1, _dump)
    return treadle_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
