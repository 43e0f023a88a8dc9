"""Metrics of resiliency, on the OpenTelemetry meter ``mesh`` (no-ops without an SDK).

=============================================  ==================================================
instrument                                     what it counts (attributes)
=============================================  ==================================================
``mesh.resiliency.breaker.transitions``        breaker state changes (``target``, ``from``, ``to``)
``mesh.resiliency.breaker.open``               breakers open or half-open now (``target``)
``mesh.resiliency.ejections``                  instances ejected (``app``, ``reason``)
``mesh.resiliency.ejected``                    instances ejected now (``app``)
``mesh.resiliency.retries``                    retries (``target``, ``reason``: ``timeout``,
                                               ``no_responders``, ``error``, ``budget_exhausted``
                                               counts the retries refused)
=============================================  ==================================================

:attr:`Telemetry.counts` keeps the same numbers in process (tests and ``mesh apps`` read them).
"""

from __future__ import annotations

from collections import Counter

from opentelemetry import metrics

__all__ = ["Telemetry", "telemetry"]


class Telemetry:
    """The resiliency instruments, and an in-process tally of what they counted."""

    def __init__(self) -> None:
        meter = metrics.get_meter("mesh")
        self._transitions = meter.create_counter(
            "mesh.resiliency.breaker.transitions", "{transition}", "Circuit breaker state changes"
        )
        self._open = meter.create_up_down_counter(
            "mesh.resiliency.breaker.open", "{breaker}", "Circuit breakers not closed (open or half-open)"
        )
        self._ejections = meter.create_counter("mesh.resiliency.ejections", "{instance}", "Instances ejected")
        self._ejected = meter.create_up_down_counter("mesh.resiliency.ejected", "{instance}", "Instances ejected now")
        self._retries = meter.create_counter("mesh.resiliency.retries", "{retry}", "Retries by reason")
        self.counts: Counter[tuple[str, ...]] = Counter()
        """``(kind, target, detail)`` -> count, e.g. ``("breaker", "topic:orders", "open")``."""

    def breaker_changed(self, target: str, old: str, new: str) -> None:
        """A breaker moved from ``old`` to ``new``."""
        self._transitions.add(1, {"target": target, "from": old, "to": new})
        if old == "closed":
            self._open.add(1, {"target": target})
        elif new == "closed":
            self._open.add(-1, {"target": target})
        self.counts["breaker", target, new] += 1

    def ejected(self, app: str, reason: str) -> None:
        """An instance of ``app`` was ejected."""
        self._ejections.add(1, {"app": app, "reason": reason})
        self._ejected.add(1, {"app": app})
        self.counts["ejection", app, reason] += 1

    def readmitted(self, app: str) -> None:
        """An ejected instance of ``app`` got traffic again (or vanished)."""
        self._ejected.add(-1, {"app": app})
        self.counts["readmitted", app, ""] += 1

    def retried(self, target: str, reason: str) -> None:
        """A retry (or, with ``budget_exhausted``, a retry refused)."""
        self._retries.add(1, {"target": target, "reason": reason})
        self.counts["retry", target, reason] += 1


_telemetry: Telemetry | None = None


def telemetry() -> Telemetry:
    """The process's resiliency instruments (made on first use, after a meter provider may be set)."""
    global _telemetry
    if _telemetry is None:
        _telemetry = Telemetry()
    return _telemetry
