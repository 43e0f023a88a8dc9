"""Resiliency: a partitioned, stalled or failing peer must not fail the calls of the whole app.

==============================  ===============================================================
module                          what
==============================  ===============================================================
``config``                      the ``resiliency:`` section: named policies and their targets
``trip``                        trip expressions of circuit breakers (``consecutive_failures >= 5``)
``breaker``                     :class:`CircuitBreaker` (closed / open / half-open), :class:`CircuitOpen`
``retry``                       retry intervals (constant, exponential with jitter), :class:`RetryBudget`
``instances``                   :class:`Balancer`: instance choice (power of two choices on in-flight),
                                outlier ejection and probes before readmission
``policies``                    :class:`Resiliency`: the policies in force per app, topic outbound
                                and topic inbound
``telemetry``                   the metrics (breaker state, ejections, retries by reason)
==============================  ===============================================================

With no ``resiliency:`` section at all, invocations already choose among live instances, eject
those that stop answering and send idempotent calls again elsewhere; see docs/resiliency.md.
"""

from __future__ import annotations

from mesh.resiliency.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from mesh.resiliency.config import (
    BreakerPolicy,
    InstancesConfig,
    ResiliencyConfig,
    RetryPolicySpec,
    TargetPolicy,
    TopicTarget,
)
from mesh.resiliency.instances import Balancer
from mesh.resiliency.policies import AppPolicy, Resiliency
from mesh.resiliency.retry import RetryBudget, interval
from mesh.resiliency.telemetry import telemetry
from mesh.resiliency.trip import Counts, Trip, parse_trip

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "AppPolicy",
    "Balancer",
    "BreakerPolicy",
    "CircuitBreaker",
    "CircuitOpen",
    "Counts",
    "InstancesConfig",
    "Resiliency",
    "ResiliencyConfig",
    "RetryBudget",
    "RetryPolicySpec",
    "TargetPolicy",
    "TopicTarget",
    "Trip",
    "interval",
    "parse_trip",
    "telemetry",
]
