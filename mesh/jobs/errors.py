"""Errors of the jobs block, all raised at schedule time (never at fire time).

==========================  ===================================================================
error                       raised when
==========================  ===================================================================
``JobError``                the base of them (a :class:`~mesh.errors.MeshError`)
``InvalidSchedule``         bad cron, unknown time zone, ``every`` <= 0, no or two schedules,
                            bad name or target (also a ``ValueError``)
``JobExists``               a job of that name exists and ``replace=True`` was not given
``JobNotFound``             ``cancel``/``trigger``/``show`` of a name that is not scheduled
                            (also a ``KeyError``)
==========================  ===================================================================

A store that cannot hold jobs (no transactions or no queries) is
:class:`~mesh.errors.FeatureNotSupported` naming the stores that can.
"""

from __future__ import annotations

from mesh.errors import MeshError

__all__ = ["InvalidSchedule", "JobError", "JobExists", "JobNotFound"]


class JobError(MeshError):
    """Something about a job: its name is in ``job``."""

    def __init__(self, job: str, message: str) -> None:
        self.job = job
        super().__init__(f"job {job!r}: {message}")


class InvalidSchedule(JobError, ValueError):
    """The schedule or target cannot work (bad cron, time zone, interval, name)."""


class JobExists(JobError):
    """A job of this name is scheduled already; pass ``replace=True`` to overwrite it."""

    def __init__(self, job: str) -> None:
        super().__init__(job, "already scheduled (pass replace=True to replace it)")


class JobNotFound(JobError, KeyError):
    """No job of this name is scheduled."""

    def __init__(self, job: str) -> None:
        super().__init__(job, "not scheduled")

    def __str__(self) -> str:
        return str(self.args[0])
