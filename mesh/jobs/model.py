"""The schedule model: what a job is, when it is next due, and what to do when it is found due.

=================  ==========================================================================
schedule           next time (all strictly after the previous scheduled time)
=================  ==========================================================================
``cron`` + ``tz``  the cron library's next match in the zone (cronsim: a time skipped by a DST
                   jump fires at the first valid minute after it, a repeated hour fires once)
``every``          ``start + k * every`` (``start`` = ``at`` if given, else the schedule time)
``at`` alone       once; a time in the past fires at once
``repeats``        stop after that many fires; ``until`` (or ``ttl``): no fire after it
``jitter``         each fire waits a random ``[0, jitter)`` after its scheduled time (never before)
=================  ==========================================================================

=========================  ==================================================================
found due (``on_due``)     decision
=========================  ==================================================================
on time (within grace)     fire; next = the schedule's next time
late, never claimed        a misfire (nobody ran): ``fire_once`` fires once and moves on to
                           the next time after now; ``skip`` moves on without firing (a
                           one-shot is then dropped)
late, claimed before       the claiming instance died: fire (at-least-once), then move on
=========================  ==================================================================
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict

from mesh.jobs.errors import InvalidSchedule

__all__ = ["KIND", "Decision", "Job", "check_name", "first_time", "next_time", "on_due"]

KIND = "mesh.job"
"""The ``kind`` field of every stored job (other keys of a shared store are left alone)."""
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@~-]{0,199}\Z")
Target = Literal["topic", "handler", "event"]


class Job(BaseModel):
    """One stored job: its schedule, target and firing state (times are Unix seconds)."""

    model_config = ConfigDict(extra="ignore")

    kind: str = KIND
    name: str
    job: str = ""
    """The name fired events carry in ``meshjob`` (a manual trigger's copy keeps the original's)."""
    cron: str | None = None
    tz: str | None = None
    every: float | None = None
    at: float | None = None
    repeats: int | None = None
    until: float | None = None
    jitter: float = 0.0
    misfire: Literal["fire_once", "skip"] = "fire_once"
    retries: int = 3
    """Further tries of a firing that could not be published (then it is dropped and logged)."""
    backoff: float = 1.0
    """First delay between those tries; doubles each time, up to 60 s."""
    target: Target = "topic"
    """``topic``: publish on ``topic``; ``handler``: the ``@app.job`` handler; ``event``: publish a
    stored event (delayed publish). Actor reminders are topic jobs on ``_mesh.reminder.<app>``."""
    topic: str | None = None
    type: str = "mesh.job.fired"
    data: Any = None
    event: str | None = None
    """The structured JSON of the event a delayed publish sends."""
    created: float = 0.0
    next: float | None = None
    """The scheduled time of the pending fire."""
    fire: float = 0.0
    """``next`` plus this fire's jitter: never fired before it."""
    due: float = 0.0
    """The index: when an instance should look at it next (``fire``, a lease's end, a retry)."""
    owner: str | None = None
    """The instance holding its lease (until ``due``)."""
    count: int = 0
    attempt: int = 0
    last: float | None = None
    """When it last fired."""

    @property
    def one_shot(self) -> bool:
        """Whether it fires at most once."""
        return self.cron is None and self.every is None


def check_name(name: Any) -> str:
    """The name, or InvalidSchedule if it cannot be a job name."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidSchedule(str(name), "a name is 1-200 characters of letters, digits and _ . : @ ~ - "
                                         "(not starting with a punctuation mark)")
    return name


def zone(job: str, tz: str | None) -> ZoneInfo:
    """The time zone of a job (UTC by default), or InvalidSchedule."""
    try:
        return ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(job, f"unknown time zone {tz!r} (an IANA name like 'Europe/Berlin')") from exc


def _cron_after(job: Job, t: float) -> float:
    tz = zone(job.name, job.tz)
    assert job.cron is not None
    try:
        return next(CronSim(job.cron, datetime.fromtimestamp(t, tz))).timestamp()
    except (CronSimError, StopIteration) as exc:
        raise InvalidSchedule(job.name, f"bad cron expression {job.cron!r}: {exc}") from exc


def check(job: Job) -> None:
    """Raise InvalidSchedule for a schedule that cannot work."""
    kinds = [k for k in ("cron", "every") if getattr(job, k) is not None]
    if len(kinds) > 1:
        raise InvalidSchedule(job.name, "give one of cron= and every=, not both")
    if not kinds and job.at is None:
        raise InvalidSchedule(job.name, "give cron=, every= or at=")
    if job.every is not None and not job.every > 0:
        raise InvalidSchedule(job.name, f"every must be longer than zero, not {job.every!r}")
    if job.cron is not None:
        if not isinstance(job.cron, str) or len(job.cron.split()) != 5:
            raise InvalidSchedule(job.name, f"bad cron expression {job.cron!r}: five fields (minute hour day "
                                            "month weekday)")
        _cron_after(job, job.created)
    elif job.tz is not None:
        zone(job.name, job.tz)
    if job.repeats is not None and job.repeats < 1:
        raise InvalidSchedule(job.name, f"repeats must be at least 1, not {job.repeats!r}")
    if job.jitter < 0 or job.retries < 0 or job.backoff < 0:
        raise InvalidSchedule(job.name, "jitter, retries and backoff cannot be negative")
    if job.target in ("topic", "event") and not job.topic:
        raise InvalidSchedule(job.name, "a job needs topic= (or a @app.job handler of its name)")


def next_time(job: Job, after: float) -> float | None:
    """The next scheduled time strictly after ``after``, or ``None`` when the job is done."""
    if job.repeats is not None and job.count >= job.repeats:
        return None
    if job.cron is not None:
        t: float | None = _cron_after(job, after)
    elif job.every is not None:
        start = job.at if job.at is not None else job.created
        k = max(0, int((after - start) // job.every) + 1)
        t = start + k * job.every
        while t <= after:  # float rounding
            t += job.every
    else:
        t = None
    if t is not None and job.until is not None and t > job.until:
        return None
    return t


def first_time(job: Job) -> float | None:
    """The first scheduled time of a new job (``at`` if given: a past one fires at once)."""
    if job.at is not None:
        return job.at if job.until is None or job.at <= job.until else None
    return next_time(job, job.created)


def with_jitter(job: Job, t: float) -> float:
    """``t`` plus a random share of the job's jitter."""
    return t + random.uniform(0, job.jitter) if job.jitter else t


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a job found due: fire (for ``scheduled``) or not, and its next time."""

    fire: bool
    scheduled: float
    next: float | None
    misfire: bool = False


def on_due(job: Job, now: float, grace: float, claimed_before: bool) -> Decision:
    """The decision for a job whose fire time has come (see the module docstring)."""
    assert job.next is not None
    late = now - job.fire > grace
    if late and not claimed_before:
        moved = job.model_copy(update={"count": job.count + (job.misfire == "fire_once")})
        return Decision(job.misfire == "fire_once", job.next, next_time(moved, now), misfire=True)
    done = job.model_copy(update={"count": job.count + 1})
    nxt = next_time(done, job.next)
    if nxt is not None and nxt + grace < now:  # fell behind: this fire was the catch-up
        nxt = next_time(done, now)
    return Decision(True, job.next, nxt)


def as_datetime(t: float) -> datetime:
    """A Unix time as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)
