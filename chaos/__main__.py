"""``python -m chaos``: run the chaos test, print one table, exit 0 only when every check passes.

Exit status: 0 pass, 1 a check failed, 2 the harness itself could not run. See ``chaos`` for
what is started, which faults are injected and what each check means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from sqlalchemy.engine import make_url

from chaos.cluster import (
    Api,
    Cluster,
    Database,
    RedisServer,
    Worker,
    child_env,
    free_port,
    require_loopback,
)
from chaos.driver import Plan, drive, say
from chaos.extras import judge_extras
from chaos.verdict import judge, snapshot
from chaos.workload import script_failures
from treadle.dbadmin import pg_dsn

DEFAULT_PG = "postgresql+asyncpg://root@127.0.0.1:5432/test"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="runs to start (200)")
    parser.add_argument("--spread", type=float, default=60, help="seconds to start them over")
    parser.add_argument("--kill-every", type=float, default=3, help="seconds between SIGKILLs")
    parser.add_argument("--min-kills", type=int, default=30, help="worker kills to inject (30)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=210,
        help="seconds from the first start until every run must have ended (210)",
    )
    parser.add_argument("--subscribers", type=int, default=20, help="runs followed live (20)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    parser.add_argument("--apis", type=int, default=2, help="API processes (2)")
    parser.add_argument("--lease", type=float, default=3, help="TREADLE_LEASE_SECONDS (3)")
    parser.add_argument("--reaper", type=float, default=0.5, help="reaper interval (0.5 s)")
    parser.add_argument("--pool-size", type=int, default=4, help="DB pool per process (4)")
    parser.add_argument("--concurrency", type=int, default=16, help="steps per worker (16)")
    parser.add_argument("--seed", type=int, default=None, help="victim choice seed")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TREADLE_TEST_DATABASE_URL") or DEFAULT_PG,
        help="a PostgreSQL URL on loopback; a fresh database is created beside it",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="child logs (a temp dir)")
    parser.add_argument("--keep-logs", action="store_true", help="keep logs even on success")
    parser.add_argument(
        "--keep-db", action="store_true", help="do not drop the database (for investigation)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.apis < 1 or args.workers < 1 or args.kill_every <= 0:
        parser.error("--runs, --apis and --workers must be >= 1, --kill-every > 0")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_loopback(make_url(args.pg_url).host, "--pg-url")
    signal.signal(signal.SIGTERM, _interrupt)
    # Even when started in the background (SIGINT ignored), Ctrl-C / SIGINT must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="treadle-chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    plan = Plan(
        runs=args.runs,
        spread=args.spread,
        kill_every=args.kill_every,
        min_kills=args.min_kills,
        timeout=args.timeout,
        subscribers=args.subscribers,
        seed=seed,
        log_dir=log_dir,
    )
    cluster = Cluster(log_dir=log_dir, db=Database(args.pg_url))
    passed = False
    began = time.monotonic()
    try:
        say(f"logs in {log_dir}; seed {seed}")
        _start(cluster, args)
        outcome = asyncio.run(drive(cluster, plan))
        dsn = pg_dsn(cluster.db.url)
        db = asyncio.run(snapshot(dsn, outcome.extras.client.workflow_id))
        sink_requests = list(cluster.sink.requests) if cluster.sink else []
        verdict = judge(
            args.runs, db, sink_requests, outcome.followers, outcome.faults, args.min_kills
        )
        for name, value, ok in asyncio.run(judge_extras(dsn, outcome.extras)):
            verdict.check(name, value, ok)
        if outcome.start_failures:
            verdict.notes.append(
                "start attempts that failed over: "
                + ", ".join(f"{k}={v}" for k, v in sorted(outcome.start_failures.items()))
            )
        print(  # noqa: T201
            f"Treadle chaos: {args.runs} runs, {args.workers} workers, {args.apis} APIs, "
            f"lease {args.lease:g} s, {time.monotonic() - began:.0f} s in all"
        )
        print(verdict.table(), flush=True)  # noqa: T201
        for note in verdict.notes:
            say(note)
        passed = verdict.passed
        return 0 if passed else 1
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    except Exception as exc:  # the harness failed, not a check: say why, clean up, exit 2
        say(f"harness error: {type(exc).__name__}: {exc}")
        return 2
    finally:
        if args.keep_db:
            say(f"database kept: {cluster.db.url}")
            cluster.db.url = ""  # nothing to drop
        cluster.close()
        if passed and not args.keep_logs and args.log_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            say(f"logs kept in {log_dir}")


def _start(cluster: Cluster, args: argparse.Namespace) -> None:
    """Database, sink, Redis, APIs and workers; each is on ``cluster`` as soon as it exists."""
    log_dir = cluster.log_dir
    cluster.db.create()
    say(f"database {cluster.db.name} migrated")
    script_failures(cluster.serve_sink(), args.runs)
    cluster.redis = RedisServer(free_port(), log_dir / "redis.log")
    cluster.redis.start()
    cluster.redis.wait_ready()
    env = child_env(
        {
            "DATABASE_URL": cluster.db.url,
            "REDIS_URL": cluster.redis.url,
            "JWT_SECRET": secrets.token_urlsafe(48),
            "TREADLE_ENV": "production",
            "TREADLE_EGRESS_ALLOW": "127.0.0.1",
            "TREADLE_LEASE_SECONDS": str(args.lease),
            "TREADLE_REAPER_INTERVAL_SECONDS": str(args.reaper),
            "TREADLE_DB_POOL_SIZE": str(args.pool_size),
            "TREADLE_WORKER_CONCURRENCY": str(args.concurrency),
            "TREADLE_DATA_DIR": str(log_dir / "data"),
            "TREADLE_ARGON2_MEMORY_KIB": "8192",
            "TREADLE_ARGON2_TIME_COST": "1",
            "LOG_LEVEL": "info",
        }
    )
    cluster.apis = [Api(i, env, log_dir / f"api{i}.log") for i in range(args.apis)]
    cluster.workers = [Worker(i, env, log_dir / f"worker{i}.log") for i in range(args.workers)]
    for child in [*cluster.apis, *cluster.workers]:
        child.start()
    for api in cluster.apis:
        api.wait_healthy()
    say(
        f"redis :{cluster.redis.port}, sink {cluster.sink_url}, "
        f"APIs {' '.join(api.url for api in cluster.apis)}, {args.workers} workers"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
