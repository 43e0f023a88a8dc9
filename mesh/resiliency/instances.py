"""Instance choice and outlier ejection for invocations (Envoy's outlier detection, caller side).

A caller that knows live instances of an app (from presence) sends each request to one of them,
on the instance's own request destination, instead of the app's shared group, which a broker
keeps feeding to an instance it cannot reach until its own heartbeat gives up:

==========================  ==================================================================
event                       what the caller does
==========================  ==================================================================
a request is sent           power of two choices: two random admitted instances, the one with
                            fewer requests in flight wins; none known: the shared group
``eject_after`` failed      eject the instance for ``ejection`` (doubling each time it is
attempts in a row           ejected again, up to ``max_ejection``); at most ``max_ejected`` of
(no reply in time, or       the live instances are ejected at once (at least one may be)
nobody listens)
ejection time over          probe: a ping on its request destination; a reply readmits it (its
                            next ejection is short again), silence ejects it again
heartbeats stop             presence drops it after its expiry: it is not chosen any more; if
                            it was ejected and comes back, it is probed first
==========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh.resiliency.telemetry import telemetry

if TYPE_CHECKING:
    from mesh.resiliency.config import InstancesConfig

__all__ = ["Balancer", "InstanceStats"]

log = logging.getLogger("mesh.resiliency")

Probe = Callable[[str, str], Coroutine[Any, Any, bool]]
"""``probe(app, instance)``: whether the instance answers a ping."""


@dataclass
class InstanceStats:
    """What a caller knows of one instance beyond presence."""

    app: str
    in_flight: int = 0
    consecutive_failures: int = 0
    ejected_until: float | None = None
    """Event-loop time the ejection ends (``None``: admitted)."""
    ejections: int = 0
    """Ejections in a row (reset by a successful reply after readmission)."""
    probing: bool = False


class Balancer:
    """One caller's instance choice and ejections (see the module docstring)."""

    def __init__(self, config: InstancesConfig, probe: Probe, spawn: Callable[[Coroutine[Any, Any, Any]], Any],
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._probe = probe
        self._spawn = spawn
        self._rng = rng or random.Random()
        self.stats: dict[str, InstanceStats] = {}

    def _stats(self, app: str, instance: str) -> InstanceStats:
        stats = self.stats.get(instance)
        if stats is None:
            stats = self.stats[instance] = InstanceStats(app)
        return stats

    def ejected(self, instance: str) -> bool:
        """Whether the instance gets no traffic now (ejected, or waiting for its probe)."""
        stats = self.stats.get(instance)
        return stats is not None and stats.ejected_until is not None

    def choose(self, app: str, live: Iterable[str], exclude: Iterable[str] = ()) -> str | None:
        """The instance of ``app`` to send to (``None``: none is admitted, use the shared group)."""
        t = asyncio.get_running_loop().time()
        live = list(live)
        self._prune(app, live)
        skip = set(exclude)
        admitted = []
        for instance in live:
            stats = self.stats.get(instance)
            if stats is not None and stats.ejected_until is not None:
                if t >= stats.ejected_until and not stats.probing:
                    stats.probing = True
                    self._spawn(self._readmit(app, instance))
                continue
            if instance not in skip:
                admitted.append(instance)
        if not admitted:
            return None
        if len(admitted) == 1:
            return admitted[0]
        a, b = self._rng.sample(admitted, 2)
        fa = self.stats[a].in_flight if a in self.stats else 0
        fb = self.stats[b].in_flight if b in self.stats else 0
        return a if fa <= fb else b

    def started(self, app: str, instance: str) -> None:
        """A request went to ``instance``."""
        self._stats(app, instance).in_flight += 1

    def finished(self, app: str, instance: str, ok: bool | None, reason: str = "timeout",
                 live: Iterable[str] = ()) -> None:
        """A request to ``instance`` ended: answered (``True``), failed (``False``), or undecided (``None``)."""
        stats = self._stats(app, instance)
        stats.in_flight = max(0, stats.in_flight - 1)
        if ok is None:
            return
        if ok:
            stats.consecutive_failures = 0
            if stats.ejected_until is None:
                stats.ejections = 0
            return
        stats.consecutive_failures += 1
        if stats.ejected_until is None and stats.consecutive_failures >= self.config.eject_after:
            self.eject(app, instance, reason, live)

    def eject(self, app: str, instance: str, reason: str, live: Iterable[str]) -> bool:
        """Eject ``instance`` unless too many of its app's instances are ejected already."""
        stats = self._stats(app, instance)
        if stats.ejected_until is not None:
            return False
        live = set(live) | {instance}
        out = sum(1 for i in live if self.ejected(i))
        allowed = max(1, int(self.config.max_ejected * len(live)))
        if out >= allowed:
            log.info("not ejecting %s (%s): %d of %d instances of %s are ejected already", instance, reason, out,
                     len(live), app)
            return False
        seconds = min(self.config.ejection * 2**stats.ejections, self.config.max_ejection)
        stats.ejections += 1
        stats.ejected_until = asyncio.get_running_loop().time() + seconds
        stats.consecutive_failures = 0
        log.warning("ejected instance %s of %s for %gs (%s)", instance, app, seconds, reason)
        telemetry().ejected(app, reason)
        return True

    async def _readmit(self, app: str, instance: str) -> None:
        stats = self._stats(app, instance)
        try:
            ok = await self._probe(app, instance)
        except Exception:  # a probe that cannot even be sent counts as silence
            log.debug("probe of %s failed", instance, exc_info=True)
            ok = False
        finally:
            stats.probing = False
        if stats.ejected_until is None:
            return
        if ok:
            stats.ejected_until = None
            stats.consecutive_failures = 0
            log.info("readmitted instance %s of %s (it answered a probe)", instance, app)
            telemetry().readmitted(app)
        else:
            seconds = min(self.config.ejection * 2**stats.ejections, self.config.max_ejection)
            stats.ejections += 1
            stats.ejected_until = asyncio.get_running_loop().time() + seconds
            log.info("instance %s of %s did not answer its probe: ejected for %gs more", instance, app, seconds)

    def _prune(self, app: str, live: list[str]) -> None:
        """Forget instances of ``app`` presence no longer lists (idle ones only). An ejected one is
        kept until ``max_ejection`` after its ejection ends, so that if it comes back (a healed
        partition) it is probed before it gets traffic, as any ejected instance is."""
        known = set(live)
        t = asyncio.get_running_loop().time()
        for instance, stats in list(self.stats.items()):
            if stats.app == app and instance not in known and stats.in_flight == 0 and not stats.probing:
                if stats.ejected_until is not None:
                    if t < stats.ejected_until + self.config.max_ejection:
                        continue
                    telemetry().readmitted(app)
                del self.stats[instance]
