"""Which cron ticks a pass fires: those within the grace, plus (catchUp) the latest missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from treadle.engine.triggers import CronTrigger, next_tick, ticks
from treadle.services.cron import due_ticks

T0 = datetime(2030, 3, 30, 23, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def cron(schedule: str, **extra: object) -> CronTrigger:
    return CronTrigger.model_validate({"type": "cron", "schedule": schedule, **extra})


def test_on_time_ticks_fire_and_a_stall_within_the_grace_loses_none() -> None:
    spec = cron("* * * * * *")
    fired = due_ticks(spec, T0, T0 + timedelta(seconds=3.5), GRACE)
    assert fired == [T0 + timedelta(seconds=s) for s in range(4)]


def test_downtime_is_skipped_and_catch_up_fires_the_latest_missed_once() -> None:
    back = T0 + timedelta(hours=1, minutes=2)
    assert due_ticks(cron("*/5 * * * *"), T0, back, GRACE) == []
    missed = due_ticks(cron("*/5 * * * *", catchUp=True), T0, back, GRACE)
    assert missed == [T0 + timedelta(hours=1)]


def test_schedules_follow_the_time_zone_across_daylight_saving() -> None:
    # 02:30 Paris does not exist on 2030-03-31: the daily 03:00 local tick is 01:00 UTC.
    assert next_tick("0 3 * * *", "Europe/Paris", T0) == datetime(2030, 3, 31, 1, 0, tzinfo=UTC)
    assert ticks("0 3 * * *", "UTC", T0, T0 + timedelta(days=2)) == [
        datetime(2030, 3, 31, 3, 0, tzinfo=UTC),
        datetime(2030, 4, 1, 3, 0, tzinfo=UTC),
    ]
