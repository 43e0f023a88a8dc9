"""The policies in force per target: what an app call, a publish or a subscription gets.

==================  ==================================================================================
target              policies (``resiliency.targets``) and what they do
==================  ==================================================================================
app call            ``timeout``: each attempt's (the call's own timeout bounds them all); ``retry``:
                    how often and how soon an idempotent call is sent again (to another instance);
                    ``circuit_breaker``: open, calls fail at once with :class:`CircuitOpen`
                    Default: an attempt gets ``instances.attempt_share`` of the call's timeout, then
                    an idempotent call goes to another instance at once, ``invoke.retries`` times
topic outbound      ``timeout`` of one publish, ``retry`` of a publish that failed,
                    ``circuit_breaker``: open, publishes fail at once. Default: none (one attempt)
topic inbound       ``circuit_breaker``: open, the subscription stops handing deliveries to handlers
                    until a half-open probe succeeds; ``timeout``: of one handler call (a
                    ``TimeoutError`` past it). Retries of handlers are the subscription's ``retry``
                    policy (``subscriptions.<topic>.retry``). Default: none
==================  ==================================================================================
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mesh.resiliency.breaker import CircuitBreaker
from mesh.resiliency.config import RetryPolicySpec
from mesh.resiliency.retry import RetryBudget, interval, may_retry
from mesh.resiliency.telemetry import telemetry

if TYPE_CHECKING:
    from mesh.config.models import MeshConfig
    from mesh.event import Event
    from mesh.resiliency.config import ResiliencyConfig, TargetPolicy
    from mesh.types import Publish

__all__ = ["AppPolicy", "Resiliency"]

log = logging.getLogger("mesh.resiliency")


@dataclass
class AppPolicy:
    """What calls to one app get."""

    timeout: float | None
    """Seconds per attempt (``None``: the default share of the call's timeout)."""
    retry: RetryPolicySpec | None
    """The named retry policy (``None``: retry at once, ``invoke.retries`` times)."""
    breaker: CircuitBreaker | None
    budget: RetryBudget


class Resiliency:
    """One App instance's policies and breakers (made from ``resiliency:``; see the module docstring)."""

    def __init__(self, config: MeshConfig) -> None:
        self.config: ResiliencyConfig = config.resiliency
        self.default_retries = config.invoke.retries
        self._breakers: dict[str, CircuitBreaker] = {}
        self._apps: dict[str, AppPolicy] = {}
        default_budget = RetryPolicySpec()
        self._default_budget = RetryBudget(default_budget.budget, default_budget.budget_min)

    def breaker(self, target: str, name: str | None) -> CircuitBreaker | None:
        """The breaker of ``target`` (one per target, made on first use) if the policy names one."""
        if name is None:
            return None
        found = self._breakers.get(target)
        if found is None:
            found = self._breakers[target] = CircuitBreaker(target, self.config.policies.circuit_breakers[name])
        return found

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker made so far, by target (``app:<id>``, ``topic:<t>:inbound``, ...)."""
        return dict(self._breakers)

    def _timeout(self, target: TargetPolicy) -> float | None:
        return self.config.policies.timeouts[target.timeout] if target.timeout else None

    def _retry(self, target: TargetPolicy) -> RetryPolicySpec | None:
        return self.config.policies.retries[target.retry] if target.retry else None

    def for_app(self, app: str) -> AppPolicy:
        """The policy of calls to ``app``."""
        found = self._apps.get(app)
        if found is not None:
            return found
        target = self.config.targets.apps.get(app)
        if target is None:
            found = AppPolicy(None, None, None, self._default_budget)
        else:
            retry = self._retry(target)
            budget = RetryBudget(retry.budget, retry.budget_min) if retry else self._default_budget
            found = AppPolicy(self._timeout(target), retry, self.breaker(f"app:{app}", target.circuit_breaker),
                              budget)
        self._apps[app] = found
        return found

    def retries_of(self, policy: AppPolicy) -> int:
        """Retries an idempotent call to the app may make (-1: until its deadline)."""
        return policy.retry.max_retries if policy.retry is not None else self.default_retries

    def inbound(self, topic: str) -> CircuitBreaker | None:
        """The breaker of this app's subscription to ``topic``, if configured."""
        target = self.config.targets.topics.get(topic)
        return self.breaker(f"topic:{topic}:inbound", target.inbound.circuit_breaker) if target else None

    def inbound_timeout(self, topic: str) -> float | None:
        """Seconds one handler call of this app's subscription to ``topic`` may take, if configured."""
        target = self.config.targets.topics.get(topic)
        return self._timeout(target.inbound) if target else None

    def wrap_publish(self, publish: Publish) -> Publish:
        """``publish`` with each topic's outbound policy (unchanged when no topic has one)."""
        outbound = {t: p.outbound for t, p in self.config.targets.topics.items()
                    if p.outbound.timeout or p.outbound.retry or p.outbound.circuit_breaker}
        if not outbound:
            return publish

        async def with_policy(topic: str, event: Event) -> None:
            target = outbound.get(topic)
            if target is None:
                await publish(topic, event)
                return
            await self._publish(publish, topic, event, target)

        return with_policy

    async def _publish(self, publish: Publish, topic: str, event: Event, target: TargetPolicy) -> None:
        timeout, retry = self._timeout(target), self._retry(target)
        breaker = self.breaker(f"topic:{topic}:outbound", target.circuit_breaker)
        done = 0
        while True:
            if breaker is not None:
                breaker.check()
            try:
                async with asyncio.timeout(timeout):
                    await publish(topic, event)
            except Exception as exc:
                if breaker is not None:
                    breaker.record(False)
                if retry is None or not may_retry(retry, done):
                    raise
                done += 1
                reason = "timeout" if isinstance(exc, TimeoutError) else "error"
                telemetry().retried(f"topic:{topic}", reason)
                log.info("publish to %s failed (%s): retry %d", topic, exc, done)
                await asyncio.sleep(interval(retry, done))
                continue
            if breaker is not None:
                breaker.record(True)
            return
