"""The ``resiliency:`` section of ``mesh.yaml``: named policies, and the targets that use them.

.. code-block:: yaml

    resiliency:
      policies:
        timeouts: {fast: 500ms, general: 5s}
        retries:
          idempotent: {policy: exponential, initial: 50ms, max_interval: 1s, max_retries: 3}
        circuit_breakers:
          apps: {trip: "consecutive_failures >= 5", open_for: 30s, half_open_requests: 1}
      targets:
        apps:
          inventory: {timeout: fast, retry: idempotent, circuit_breaker: apps}
        topics:
          payments: {outbound: {retry: idempotent}, inbound: {circuit_breaker: apps}}
      instances: {eject_after: 2, ejection: 5s, max_ejection: 60s, max_ejected: 0.5}

Nothing is needed in the common case: without this section calls pick among live instances,
eject the ones that stop answering and retry idempotent calls elsewhere (see docs/resiliency.md).
Names used by targets must exist under ``policies`` (:func:`resiliency_problems` reports those
that do not, with their path, when the config loads).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from mesh.resiliency.trip import Trip, parse_trip

__all__ = [
    "BreakerPolicy",
    "InstancesConfig",
    "ResiliencyConfig",
    "RetryPolicySpec",
    "TargetPolicy",
    "TopicTarget",
    "resiliency_problems",
    "resiliency_warnings",
    "unknown_topics",
]

log = logging.getLogger("mesh.resiliency")


def _duration(value: Any) -> float:
    from mesh.config.models import parse_duration  # imported late: models imports this module

    return parse_duration(value)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicySpec(_Frozen):
    """A named retry policy (``policies.retries.<name>``), Dapr's vocabulary where it fits."""

    policy: Literal["constant", "exponential"] = "exponential"
    initial: float = Field(0.05, gt=0, validation_alias=AliasChoices("initial", "duration"))
    """Interval before the first retry (the constant interval with ``policy: constant``; Dapr's ``duration``)."""
    max_interval: float = Field(1.0, gt=0)
    """Longest interval between two attempts (exponential)."""
    max_retries: int = Field(3, ge=-1)
    """Retries after the first attempt; ``-1``: until the deadline (Dapr's meaning)."""
    jitter: bool = True
    """Full jitter: each interval is drawn between half of it and all of it."""
    budget: float = Field(0.2, ge=0)
    """Retries allowed per first attempt over the last 10 s (0.2: at most one retry per five calls),
    beyond ``budget_min`` retries per second, so a storm of failures cannot multiply load."""
    budget_min: float = Field(3.0, ge=0)
    """Retries per second always allowed, however few calls there were."""

    _durations = field_validator("initial", "max_interval", mode="before")(lambda v: _duration(v))


class BreakerPolicy(_Frozen):
    """A named circuit breaker (``policies.circuit_breakers.<name>``): closed, open, half-open."""

    trip: str = "consecutive_failures >= 5"
    """When a closed breaker opens (see :mod:`mesh.resiliency.trip`)."""
    open_for: float = Field(30.0, gt=0, validation_alias=AliasChoices("open_for", "timeout"))
    """How long it stays open before letting probes through (Dapr's ``timeout``)."""
    half_open_requests: int = Field(1, ge=1, validation_alias=AliasChoices("half_open_requests", "max_requests"))
    """Probes let through while half-open; all must succeed to close (Dapr's ``maxRequests``)."""
    interval: float = Field(0.0, ge=0)
    """Period after which a closed breaker forgets its counts (0: only on a state change)."""

    _durations = field_validator("open_for", "interval", mode="before")(lambda v: _duration(v))

    @field_validator("trip")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_trip(value)  # ValueError with the column: reported at this field's path and line
        return value

    @property
    def tripped(self) -> Trip:
        """The parsed trip expression."""
        return parse_trip(self.trip)


class Policies(_Frozen):
    """Named policies (``resiliency.policies``)."""

    timeouts: dict[str, float] = Field(default_factory=dict)
    retries: dict[str, RetryPolicySpec] = Field(default_factory=dict)
    circuit_breakers: dict[str, BreakerPolicy] = Field(default_factory=dict)

    @field_validator("timeouts", mode="before")
    @classmethod
    def _timeouts(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for name, v in value.items():
                seconds = _duration(v)
                if seconds <= 0:
                    raise ValueError(f"timeout {name!r} must be longer than 0")
                out[name] = seconds
            return out
        return value


class TargetPolicy(_Frozen):
    """The policies one target uses, by name (each optional)."""

    timeout: str | None = None
    retry: str | None = None
    circuit_breaker: str | None = None


class TopicTarget(_Frozen):
    """A topic's policies: for publishing to it, and for this app's subscription to it."""

    outbound: TargetPolicy = Field(default_factory=TargetPolicy)
    inbound: TargetPolicy = Field(default_factory=TargetPolicy)


class Targets(_Frozen):
    """What the policies apply to (``resiliency.targets``)."""

    apps: dict[str, TargetPolicy] = Field(default_factory=dict)
    topics: dict[str, TopicTarget] = Field(default_factory=dict)


class InstancesConfig(_Frozen):
    """Instance choice and outlier ejection for invocations (``resiliency.instances``)."""

    enabled: bool = True
    """Send requests to one chosen instance (off: the app's shared group, as before)."""
    eject_after: int = Field(2, ge=1)
    """Consecutive failed attempts (no reply in time, or the broker says nobody listens) that eject."""
    ejection: float = Field(5.0, gt=0)
    """First ejection time; it doubles each time the same instance is ejected again, up to ``max_ejection``."""
    max_ejection: float = Field(60.0, gt=0)
    max_ejected: float = Field(0.5, ge=0, le=1)
    """Largest share of an app's live instances ejected at once (at least one may always be)."""
    attempt_share: float = Field(1 / 3, gt=0, le=1)
    """Without a timeout policy, an idempotent call tries another instance after this share of its timeout."""

    _durations = field_validator("ejection", "max_ejection", mode="before")(lambda v: _duration(v))


class ResiliencyConfig(_Frozen):
    """The whole ``resiliency:`` section (see the module docstring)."""

    policies: Policies = Field(default_factory=Policies)
    targets: Targets = Field(default_factory=Targets)
    instances: InstancesConfig = Field(default_factory=InstancesConfig)


_KINDS = (("timeout", "timeouts", "timeout"), ("retry", "retries", "retry"), ("circuit_breaker", "circuit_breakers",
                                                                                 "circuit breaker"))


def _refs(config: ResiliencyConfig) -> list[tuple[str, TargetPolicy]]:
    out = [(f"resiliency.targets.apps.{name}", policy) for name, policy in config.targets.apps.items()]
    for topic, target in config.targets.topics.items():
        out.append((f"resiliency.targets.topics.{topic}.outbound", target.outbound))
        out.append((f"resiliency.targets.topics.{topic}.inbound", target.inbound))
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def resiliency_problems(section: Any) -> list[tuple[str, str]]:
    """Targets naming a policy that does not exist, and names no broker takes, with their paths.

    Reads the raw ``resiliency`` mapping, so these are reported together with the model's own
    problems (the config is validated whole)."""
    from mesh.errors import InvalidName
    from mesh.names import check_app_id, check_topic

    problems: list[tuple[str, str]] = []
    section = _mapping(section)
    policies = _mapping(section.get("policies"))
    targets = _mapping(section.get("targets"))
    refs: list[tuple[str, dict[str, Any]]] = []
    for name, target in _mapping(targets.get("apps")).items():
        try:
            check_app_id(name)
        except InvalidName as exc:
            problems.append((f"resiliency.targets.apps.{name}", str(exc)))
        refs.append((f"resiliency.targets.apps.{name}", _mapping(target)))
    for topic, target in _mapping(targets.get("topics")).items():
        try:
            check_topic(topic)
        except InvalidName as exc:
            problems.append((f"resiliency.targets.topics.{topic}", str(exc)))
        for side in ("outbound", "inbound"):
            refs.append((f"resiliency.targets.topics.{topic}.{side}", _mapping(_mapping(target).get(side))))
    for topic, target in _mapping(targets.get("topics")).items():
        if _mapping(_mapping(target).get("inbound")).get("retry") is not None:
            problems.append((f"resiliency.targets.topics.{topic}.inbound.retry",
                             f"a subscription retries by its own policy: use subscriptions.{topic}.retry"))
    for path, target in refs:
        for attr, kind, what in _KINDS:
            ref = target.get(attr)
            known = _mapping(policies.get(kind))
            if isinstance(ref, str) and ref not in known:
                shown = ", ".join(sorted(known)) or f"none defined under resiliency.policies.{kind}"
                problems.append((f"{path}.{attr}", f"unknown {what} policy {ref!r} (known: {shown})"))
    return problems


def resiliency_warnings(config: ResiliencyConfig) -> list[tuple[str, str]]:
    """Policies that can never succeed as combined (a timeout shorter than the retry interval)."""
    out: list[tuple[str, str]] = []
    policies = config.policies
    for path, target in _refs(config):
        timeout = policies.timeouts.get(target.timeout or "")
        retry = policies.retries.get(target.retry or "")
        if timeout is not None and retry is not None and retry.max_retries != 0 and timeout <= retry.initial:
            out.append((path, f"timeout {target.timeout!r} ({timeout:g}s) is not longer than the first interval of "
                              f"retry {target.retry!r} ({retry.initial:g}s): no retry can ever start in time"))
    return out


def unknown_topics(config: ResiliencyConfig, known: set[str]) -> list[tuple[str, str]]:
    """Inbound topic targets naming a topic that is in ``known`` (what the app subscribes to, and the
    ``subscriptions:`` of the config) neither: checked when the app starts."""
    out = []
    for topic, target in config.targets.topics.items():
        if target.inbound.circuit_breaker and topic not in known:
            shown = ", ".join(sorted(known)) or "none"
            out.append((f"resiliency.targets.topics.{topic}.inbound",
                        f"the app subscribes to no topic {topic!r} and subscriptions: does not name it "
                        f"(known: {shown})"))
    return out
