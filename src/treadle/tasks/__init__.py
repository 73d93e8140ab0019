"""Taskiq wiring: the broker, the ``treadle.run_step`` task and the reaper loop.

Invariants:
- Messages carry ids only; the database is the source of truth, Taskiq is the doorbell.
- Handling a message twice is harmless: ``advance_step`` re-checks the step under a lock.
"""
