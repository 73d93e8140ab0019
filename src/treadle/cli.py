"""The ``treadle`` command: serve, worker, migrate, seed, dev."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from collections.abc import Callable
from typing import Any

from treadle.settings import Settings


def _serve(settings: Settings, *, dev: bool) -> int:
    import uvicorn

    from treadle.logging import configure_logging, uvicorn_log_config

    # uvicorn's own lines (access log, tracebacks) go through our scrubbing JSON handler.
    configure_logging(settings.log_level, secrets=[settings.jwt_secret, settings.openai_api_key])
    uvicorn.run(
        _app_factory(dev=dev),
        factory=True,
        log_config=uvicorn_log_config(settings.log_level),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Off: uvicorn would trust X-Forwarded-For from any loopback peer. The app honours
        # it from TREADLE_TRUSTED_PROXIES only (see app._proxies).
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        # The live fan-out writes prebuilt frames to this protocol's transport (wsframes.py);
        # per-message deflate would compress each frame once per socket.
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )
    return 0


GC_GEN0_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


def _app_factory(*, dev: bool) -> Callable[[], Any]:
    """The app factory for uvicorn; the built app and everything imported are frozen out of
    the garbage collector, which then collects young objects less often: with thousands of
    live subscribers most allocations are short-lived frames and dicts."""

    def build() -> Any:
        from treadle.app import create_app, create_dev_app

        app = create_dev_app() if dev else create_app()
        gc.collect()
        gc.freeze()
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
        return app

    return build


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.redis_url:
        print("treadle worker needs REDIS_URL (embedded mode runs steps in `treadle dev`)")  # noqa: T201
        return 2
    with contextlib.ExitStack() as stack:
        if settings.treadle_worker_metrics_port is not None:
            # Before anything imports prometheus_client: the forked children inherit its mode.
            from treadle.tasks.exporter import serve_worker_metrics

            stack.enter_context(serve_worker_metrics(settings))
        return _run_taskiq(settings, args)


def _run_taskiq(settings: Settings, args: argparse.Namespace) -> int:
    from treadle.tasks.lean import import_taskiq

    # Without aiohttp (Taskiq imports it for a middleware we never use): every forked worker
    # process starts with the supervisor's modules, so this keeps ~10 MB out of each.
    import_taskiq()
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    from treadle.logging import configure_logging

    # The supervising process logs too (children started, stopped): scrubbed JSON as well.
    configure_logging(settings.log_level, secrets=[settings.jwt_secret, settings.openai_api_key])

    argv = [
        "treadle.tasks.broker:create_broker",
        "--workers",
        str(args.processes),
        "--max-async-tasks",
        str(settings.treadle_worker_concurrency),
        "--ack-type",
        "when_executed",
        "--wait-tasks-timeout",
        str(args.grace),
        "--no-configure-logging",
        "--tasks-pattern",
        "__none__",
    ]
    status = run_worker(WorkerArgs.from_cli(argv))
    return int(status or 0)


def _migrate(settings: Settings) -> int:
    from treadle.migrate import upgrade

    upgrade(settings.database_url)
    print(f"database migrated: {_redacted(settings.database_url)}")  # noqa: T201
    return 0


def _seed(settings: Settings) -> int:
    from treadle.seed import seed
    from treadle.tasks.broker import open_runtime

    async def main() -> tuple[str, str]:
        async with open_runtime(settings, embedded=True) as resources:
            return await seed(resources)

    email, password = asyncio.run(main())
    print(f"demo login: {email} / {password}")  # noqa: T201
    return 0


def _redacted(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if sep else url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="treadle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="API server only (production topology)")
    worker = sub.add_parser("worker", help="a Taskiq worker process")
    worker.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--grace", type=float, default=25.0, help="seconds to finish steps")
    sub.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    sub.add_parser("seed", help="idempotent demo tenant, user and workflows")
    sub.add_parser("dev", help="API + worker in one process on embedded defaults")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"treadle: invalid settings: {_first_line(exc)}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command == "serve":
        return _serve(settings, dev=False)
    if args.command == "dev":
        return _serve(settings, dev=True)
    if args.command == "worker":
        return _worker(settings, args)
    if args.command == "migrate":
        return _migrate(settings)
    return _seed(settings)


def _first_line(exc: ValueError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = next((line for line in lines if "JWT_SECRET" in line), lines[-1] if lines else "")
    return message.removeprefix("Value error, ")


if __name__ == "__main__":
    sys.exit(main())
