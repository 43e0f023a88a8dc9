"""Circuit breakers: closed, open, half-open, for app calls, publishes and subscriptions.

=========  ===================================================================================
state      what happens
=========  ===================================================================================
closed     everything passes; outcomes are counted and the trip expression is checked after
           each failure (counts are forgotten every ``interval``, if one is set)
open       nothing passes for ``open_for``: calls and publishes fail at once with
           :class:`CircuitOpen`; a subscription waits (:meth:`CircuitBreaker.admit` blocks, the
           deliveries in hand are neither retried nor dead-lettered)
half-open  ``half_open_requests`` probes pass; all succeeding closes the breaker, one failing
           opens it again for ``open_for``
=========  ===================================================================================

State changes are logged (``mesh.resiliency``) and counted (``mesh.resiliency.breaker.transitions``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mesh.errors import MeshError
from mesh.resiliency.telemetry import telemetry
from mesh.resiliency.trip import Counts

if TYPE_CHECKING:
    from mesh.resiliency.config import BreakerPolicy

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "CircuitOpen"]

log = logging.getLogger("mesh.resiliency")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(MeshError):
    """A call or publish refused at once because the target's circuit breaker is open."""

    def __init__(self, target: str, remaining: float) -> None:
        super().__init__(f"circuit breaker of {target} is open (probes again in {max(remaining, 0):.1f}s)")
        self.target = target


class CircuitBreaker:
    """One breaker for one target (see the module docstring). Not thread-safe: one event loop."""

    def __init__(self, target: str, policy: BreakerPolicy, clock: Callable[[], float] | None = None) -> None:
        self.target = target
        self.policy = policy
        self._trip = policy.tripped
        self._clock = clock
        self.state = CLOSED
        self._consecutive = self._failures = self._requests = 0
        self._opened_at = 0.0
        self._window_start = 0.0
        self._probes = 0  # probes let through in this half-open period
        self._probe_ok = 0
        self._changed: asyncio.Event | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def counts(self) -> Counts:
        """What the breaker counted since it last closed (or its interval began)."""
        return Counts(self._consecutive, self._failures, self._requests)

    # -- asking ---------------------------------------------------------------------------------

    def allow(self) -> bool:
        """Whether one request may pass now (taking a probe slot when half-open)."""
        if self.state == OPEN:
            if self._now() - self._opened_at < self.policy.open_for:
                return False
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self._probes >= self.policy.half_open_requests:
                return False
            self._probes += 1
        return True

    def check(self) -> None:
        """:meth:`allow` or raise :class:`CircuitOpen` (calls and publishes)."""
        if not self.allow():
            raise CircuitOpen(self.target, self.policy.open_for - (self._now() - self._opened_at))

    async def admit(self) -> None:
        """Wait until one request may pass (subscriptions: consumption pauses while open)."""
        while not self.allow():
            if self._changed is None:
                self._changed = asyncio.Event()
            wait = self.policy.open_for - (self._now() - self._opened_at) if self.state == OPEN else None
            try:
                async with asyncio.timeout(max(wait, 0.01) if wait is not None else None):
                    await self._changed.wait()
            except TimeoutError:
                pass

    # -- telling --------------------------------------------------------------------------------

    def record(self, ok: bool) -> None:
        """The outcome of a request that :meth:`allow` let through."""
        if self.state == HALF_OPEN:
            if not ok:
                self._move(OPEN)
                return
            self._probe_ok += 1
            if self._probe_ok >= self.policy.half_open_requests:
                self._move(CLOSED)
            return
        if self.state == OPEN:
            return  # a request from before it opened
        t = self._now()
        if self.policy.interval and t - self._window_start >= self.policy.interval:
            self._reset(t)
        self._requests += 1
        if ok:
            self._consecutive = 0
            return
        self._consecutive += 1
        self._failures += 1
        if self._trip(self.counts):
            self._move(OPEN)

    def _reset(self, t: float) -> None:
        self._consecutive = self._failures = self._requests = 0
        self._window_start = t

    def _move(self, state: str) -> None:
        old, self.state = self.state, state
        t = self._now()
        if state == OPEN:
            self._opened_at = t
            log.warning("circuit breaker of %s: %s -> open for %gs (%s; %s)", self.target, old, self.policy.open_for,
                        self._trip.text, self.counts)
        else:
            log.info("circuit breaker of %s: %s -> %s", self.target, old, state)
        self._probes = self._probe_ok = 0
        if state == CLOSED:
            self._reset(t)
        telemetry().breaker_changed(self.target, old, state)
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()
