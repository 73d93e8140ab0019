"""``make chaos``: Treadle's execution guarantees under process kills, on one machine.

Run ``make chaos`` (``CHAOS_ARGS="--runs 20 --min-kills 5"`` for a short run) or
``python -m chaos --help``. Needs PostgreSQL on loopback (``--pg-url``, default
``$TREADLE_TEST_DATABASE_URL`` or ``root@127.0.0.1:5432/test``) and a ``redis-server`` binary.
Progress and details go to stderr, the table to stdout; child logs are kept on failure.

Everything listens on loopback. The harness starts:

- a fresh PostgreSQL database beside ``--pg-url`` (created, migrated, dropped at the end);
- its *own* ``redis-server`` on a free port (never the machine's shared Redis), so that it can
  be killed and restarted empty;
- two ``treadle serve`` processes and three ``treadle worker`` processes, each in its own
  process group, with short leases (3 s) and a fast reaper (0.5 s);
- a recording HTTP sink (``tests.fakes.sink``) served in this process.

Workload: one tenant, one workflow, ``--runs`` runs started over ``--spread`` seconds through
both APIs (each start carries an ``Idempotency-Key``, so a start retried on the other API after
a failure never makes a second run). The workflow has an HTTP step whose first call answers 503
for some runs (a retry), two parallel HTTP branches (one slow, so kills land mid-call), a durable
``DELAY``, a ``CONDITION`` joining both branches, two ``TRANSFORM`` s (one skipped) joined again,
and a signed ``WEBHOOK``. Every node may take 10 attempts: ``WORKER_LOST`` uses attempts too.

Two more workloads run under the same faults (``chaos/extras.py``): ``--runs``/10 runs of an
``APPROVAL`` workflow, approved through the APIs by a resolver (failing over between them) once
they wait; and a workflow whose cron trigger ticks every second for the whole ``--spread``,
deleted at its end. The main checks below count only the main workflow's runs.

Faults, on a timeline from the first start: a random worker is SIGKILLed (the whole group) every
``--kill-every`` seconds and restarted at once, until ``--min-kills``; one API process is SIGKILLed
while live ``runEvents`` subscribers are attached to it, then restarted; the Redis server is
SIGKILLed and started again empty (stream, consumer group and pub/sub state are gone); every
PostgreSQL backend of the database is terminated once (``pg_terminate_backend``).

Subscribers: ``--subscribers`` runs (spread over the window) are followed over
graphql-transport-ws. On any disconnect or error a subscriber reconnects, to the other API
first, resuming with ``afterSeq`` = the highest seq it has received.

Checks (the table's last column; the exit status is 1 unless all pass):

- *runs completed / started*: runs ``COMPLETED`` out of runs in the database; both must equal
  ``--runs``. A ``FAILED`` run is not completed: with correct behaviour every run completes.
- *stuck runs*: runs not terminal when the deadline (``--timeout`` after the first start) passes.
- *duplicate side effects*: ``Idempotency-Key`` values (``runId:nodeId:attempt``) the sink saw
  more than once, i.e. one attempt executed twice. A new attempt after a kill has a new key and
  is the documented at-least-once behaviour, not a duplicate.
- *effects missing at sink*: completed HTTP/webhook steps whose final attempt's key never reached
  the sink (a result recorded without the call having been made).
- *event gaps / duplicates / out of order (subscribers)*: per followed run, seqs in
  ``1..last_seq`` never received, seqs received more than once, and seqs that arrived after a
  higher one.
- *event history (DB)*: runs whose stored seqs are not exactly ``1..last_seq`` or that do not hold
  exactly one terminal event.
- *approval runs*: every one completed, approved, with exactly one ``STEP_WAITING``.
- *cron ticks*: every tick from the first to the last started exactly one run (none twice,
  none skipped), all completed, and none started after the workflow's delete.
- *the faults themselves*: at least ``--min-kills`` worker kills, one Redis restart, at least one
  backend terminated, and the API killed with at least one subscriber attached.

Reported without a verdict: run durations; subscriber reconnects and event delivery latency
(``createdAt`` until arrival, also after the Redis restart: a dead pub/sub shows up as seconds
of latency, since followers then only see events through their database poll); *history
stalls*, quiet stretches of more than 10 s in a run's events, which nothing in this workflow
explains except a lost queue message waiting for the reaper's re-dispatch grace (30 s).

Recovery time (reported, not gated): for every attempt lost to a fault (a ``STEP_RETRYING``
event with error ``WORKER_LOST``), the time from the first fault injected at or after that
attempt's ``STEP_STARTED`` (worker kill, Redis restart or backend termination) until the step's
next attempt started (the reclaim writes ``STEP_RETRYING`` and the new ``STEP_STARTED`` in one
transaction). Expected: about lease + reaper interval. Lost attempts with no fault in their
lifetime are counted as *leases lost without a fault* (a starved heartbeat, for instance).
"""
