"""The schedule model with a controlled clock: cron over DST, intervals, never early, misfire policies."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mesh.jobs.model import Job, first_time, next_time, on_due

BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def walk(job: Job, start: float, n: int) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        nxt = next_time(job, t)
        assert nxt is not None
        out.append(datetime.fromtimestamp(nxt, BERLIN))
        t = nxt
    return out


def test_cron_with_a_time_zone_fires_at_the_wall_clock_time_across_spring_forward() -> None:
    job = Job(name="n", cron="30 2 * * *", tz="Europe/Berlin")
    times = walk(job, ts(2024, 3, 29, 12, 0), 4)
    # 02:30 does not exist on 31 March 2024: cronsim fires at the first valid minute after the jump
    assert [(t.day, t.hour, t.minute) for t in times] == [(30, 2, 30), (31, 3, 0), (1, 2, 30), (2, 2, 30)]
    assert [t.utcoffset().total_seconds() / 3600 for t in times] == [1, 2, 2, 2]  # type: ignore[union-attr]


def test_cron_with_a_time_zone_fires_once_in_the_repeated_hour_of_fall_back() -> None:
    job = Job(name="n", cron="30 2 * * *", tz="Europe/Berlin")
    times = walk(job, ts(2024, 10, 26, 12, 0), 3)
    assert [(t.day, t.hour, t.minute) for t in times] == [(27, 2, 30), (28, 2, 30), (29, 2, 30)]
    # 02:30 comes twice on 27 October: it fires at the first (summer time); real time between the
    # fires is 25 hours over the change, 24 after it
    assert times[0].utcoffset().total_seconds() == 7200  # type: ignore[union-attr]
    gaps = [(b.timestamp() - a.timestamp()) / 3600 for a, b in itertools.pairwise(times)]
    assert gaps == [25, 24]


def test_hourly_cron_over_fall_back_fires_every_real_hour() -> None:
    job = Job(name="h", cron="0 * * * *", tz="Europe/Berlin")
    times = walk(job, ts(2024, 10, 27, 0, 30), 4)
    assert all(t.minute == 0 for t in times)
    assert [t.astimezone(ZoneInfo("UTC")).hour for t in times] == [23, 0, 1, 2]  # no hour fires twice


def test_every_counts_from_its_start_and_stops_after_repeats_and_until() -> None:
    job = Job(name="e", every=10.0, created=1000.0)
    assert first_time(job) == 1010.0
    assert next_time(job, 1010.0) == 1020.0
    assert next_time(job, 1013.5) == 1020.0
    assert next_time(job.model_copy(update={"count": 3, "repeats": 3}), 1030.0) is None
    assert next_time(job.model_copy(update={"until": 1025.0}), 1020.0) is None


def test_a_past_one_shot_is_due_at_once() -> None:
    job = Job(name="o", at=500.0, created=1000.0, topic="t")
    assert first_time(job) == 500.0


@pytest.mark.parametrize("now", [1010.0, 1010.5, 1014.9])
def test_on_time_fires_for_its_scheduled_time_and_moves_on(now: float) -> None:
    job = Job(name="e", every=10.0, created=1000.0, next=1010.0, fire=1010.0)
    d = on_due(job, now, grace=5.0, claimed_before=False)
    assert d.fire and d.scheduled == 1010.0 and d.next == 1020.0 and not d.misfire


def test_misfire_fire_once_fires_one_catch_up_then_the_next_time_after_now() -> None:
    job = Job(name="e", every=10.0, created=1000.0, next=1010.0, fire=1010.0, misfire="fire_once")
    d = on_due(job, 1095.0, grace=5.0, claimed_before=False)  # eight times missed
    assert d.misfire and d.fire and d.scheduled == 1010.0 and d.next == 1100.0


def test_misfire_skip_does_not_fire_and_goes_to_the_next_time_after_now() -> None:
    job = Job(name="e", every=10.0, created=1000.0, next=1010.0, fire=1010.0, misfire="skip")
    d = on_due(job, 1095.0, grace=5.0, claimed_before=False)
    assert d.misfire and not d.fire and d.next == 1100.0


def test_a_skipped_one_shot_is_dropped() -> None:
    job = Job(name="o", at=1010.0, next=1010.0, fire=1010.0, misfire="skip", topic="t")
    d = on_due(job, 1100.0, grace=5.0, claimed_before=False)
    assert not d.fire and d.next is None


def test_a_job_whose_claimer_died_fires_however_late() -> None:
    job = Job(name="o", at=1010.0, next=1010.0, fire=1010.0, misfire="skip", topic="t")
    d = on_due(job, 1100.0, grace=5.0, claimed_before=True)
    assert d.fire and not d.misfire and d.next is None


def test_jitter_never_moves_a_fire_before_its_time() -> None:
    from mesh.jobs.model import with_jitter

    job = Job(name="j", every=1.0, jitter=0.5)
    samples = [with_jitter(job, 100.0) for _ in range(200)]
    assert all(100.0 <= s < 100.5 for s in samples)
