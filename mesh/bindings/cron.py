"""``cron``: an event on a schedule, fired by the jobs block (issue #15).

The options (``schedule``, ``timezone``, ``topic``, ``event_type``, ``data``) are validated now, so
a config written today stays valid; starting the binding raises
:class:`~mesh.errors.FeatureNotSupported` until the jobs block, which owns schedules and the
leases that make one instance fire each occurrence, is connected here.
"""

from __future__ import annotations

from mesh.bindings.base import BindingFeatures, InputBinding
from mesh.bindings.options import CronOptions
from mesh.errors import FeatureNotSupported

__all__ = ["Cron"]


class Cron(InputBinding[CronOptions]):
    """Publish ``data`` as ``event_type`` on ``topic`` at each occurrence of ``schedule`` (needs jobs)."""

    type = "cron"
    features = BindingFeatures(direction="input", delivery="once per occurrence (the jobs block's leases)")

    async def start(self) -> None:
        """Not available yet: raises :class:`FeatureNotSupported` naming the jobs block."""
        raise FeatureNotSupported("cron binding", "schedules", "the jobs block (issue #15)")

    async def stop(self) -> None:
        """Nothing to stop."""
