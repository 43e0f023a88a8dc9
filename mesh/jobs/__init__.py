"""Jobs: durable schedules (cron, intervals, one-shot, delayed publish) fired once across instances.

=====================  =======================================================================
guarantee              how
=====================  =======================================================================
durable                each job is one key in a state store (memory, sqlite, postgres)
never early            a fire waits for its time on the clock (plus jitter), then publishes
once per time          instances claim a due job with an ETag-checked write: one wins
at-least-once          an instance that dies holding a claim: another fires after the lease
misfire after downtime ``fire_once`` (default) fires once to catch up, ``skip`` does not
=====================  =======================================================================

``app.jobs`` is a :class:`~mesh.jobs.block.JobsBlock`; ``@app.job(name)`` registers a handler;
``app.publish(..., deliver_at=...)`` is a one-shot job. See docs/jobs.md.
"""

from __future__ import annotations

from mesh.jobs.block import JobsBlock
from mesh.jobs.config import JobsConfig
from mesh.jobs.errors import InvalidSchedule, JobError, JobExists, JobNotFound
from mesh.jobs.model import Job

__all__ = ["InvalidSchedule", "Job", "JobError", "JobExists", "JobNotFound", "JobsBlock", "JobsConfig"]
