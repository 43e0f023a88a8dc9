"""Durable reminders: each one is a job of the app's jobs block, fired as an actor call.

==============================  =============================================================
question                        answer
==============================  =============================================================
where                           a job ``reminder.<hash of type, id, name>`` in the jobs store
                                (``jobs.store``); setting it again replaces it, cancelling
                                the reminder cancels the job
firing                          the job is aimed at ``_mesh.reminder.<app>``, a local receiver
                                of the jobs block: the instance that fires it calls the actor
                                (nothing is published, no consumer group is involved), which
                                runs ``on_reminder(name, data)`` as a turn on its current owner
survives a full restart         yes: the job is in the store; any instance fires it, the
                                call goes to whichever instance owns the actor then
fires twice?                    at least once (the jobs block's leases; a call whose reply was
                                lost is made again): ``on_reminder`` should be idempotent
a failing ``on_reminder``       the call fails: fired again ``RETRIES`` times with doubling
                                ``BACKOFF``, then that fire is dropped with an ERROR line (a
                                periodic reminder still fires at its next time)
==============================  =============================================================
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from mesh.extensions import REMINDER_PREFIX
from mesh.jobs.errors import JobNotFound
from mesh.jobs.model import Job

if TYPE_CHECKING:
    from mesh.jobs.block import JobsBlock

__all__ = ["REMINDER_TYPE", "Reminders", "reminder_topic"]

REMINDER_TYPE = "mesh.actor.reminder"
"""The CloudEvents type of a fired reminder."""
RETRIES = 5
"""How many times a fire whose actor call failed is made again."""
BACKOFF = 0.5
"""Seconds before the first of those tries (doubling, at most 60 s)."""


def reminder_topic(app_id: str) -> str:
    """Where the reminders of app ``app_id`` fire (consumed by the app's group)."""
    return REMINDER_PREFIX + app_id


class Reminders:
    """The actor-facing side: one job per (type, id, reminder name) in the jobs block."""

    def __init__(self, jobs: JobsBlock, topic: str) -> None:
        self.jobs = jobs
        self.topic = topic

    @staticmethod
    def name(actor_type: str, actor_id: str, reminder: str) -> str:
        """The job name of one actor's reminder (unique per type, id and name; a valid job name)."""
        key = hashlib.sha256("\0".join((actor_type, actor_id, reminder)).encode()).hexdigest()[:40]
        return f"reminder.{key}"

    async def set(self, actor_type: str, actor_id: str, reminder: str, due: float, period: float | None,
                  data: Any) -> None:
        """Set (or replace) a reminder of an actor."""
        job = Job(name=self.name(actor_type, actor_id, reminder), at=time.time() + due, every=period or None,
                  target="topic", topic=self.topic, type=REMINDER_TYPE, retries=RETRIES, backoff=BACKOFF,
                  data={"type": actor_type, "id": actor_id, "name": reminder, "data": data}, created=time.time())
        await self.jobs.add(job, replace=True)

    async def cancel(self, actor_type: str, actor_id: str, reminder: str) -> None:
        """Remove a reminder of an actor (a no-op if it is not set)."""
        try:
            await self.jobs.cancel(self.name(actor_type, actor_id, reminder))
        except JobNotFound:
            pass
