"""``cron``: an event on a schedule, fired by the jobs block.

The binding is a job of the app (``binding.<name>``) in the jobs block, so each occurrence fires
once across the app's instances (the jobs block's leases), never early, and survives restarts;
what the jobs block guarantees (docs/jobs.md) holds for it. ``@daily`` and the other macros are
expanded to their five fields; ``@every 5m`` becomes a fixed interval. Removing the binding from
the config does not remove the job: ``mesh jobs cancel binding.<name>`` does.
"""

from __future__ import annotations

from mesh.bindings.base import BindingFeatures, InputBinding
from mesh.bindings.options import CronOptions
from mesh.config import parse_duration
from mesh.errors import FeatureNotSupported

__all__ = ["Cron"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Cron(InputBinding[CronOptions]):
    """Publish ``data`` as ``event_type`` on ``topic`` at each occurrence of ``schedule``."""

    type = "cron"
    features = BindingFeatures(direction="input", delivery="once per occurrence (the jobs block's leases)")

    async def start(self) -> None:
        """Schedule (or update) the job that fires this binding."""
        jobs = self.runtime.jobs
        if jobs is None:
            raise FeatureNotSupported("cron binding", "schedules", "an App (its jobs block fires cron bindings)")
        options = self.options
        text = MACROS.get(options.schedule, options.schedule)
        when: dict[str, object] = {}
        if text.startswith("@every "):
            when["every"] = parse_duration(text.removeprefix("@every ").strip())
        else:
            when["cron"], when["tz"] = text, options.timezone
        await jobs.schedule(
            f"binding.{self.name}",
            topic=self.topic,
            type=self.event_type(),
            data=options.data,
            replace=True,
            **when,  # type: ignore[arg-type]
        )
        self.state = "running"

    async def stop(self) -> None:
        """Nothing to stop: the schedule is durable and fired by the jobs block."""
        self.state = "stopped"
