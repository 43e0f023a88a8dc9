"""Built-in retry plugin: immediate retries in process, then delayed ones through the broker.

Policy per subscription (``subscriptions.<topic>.retry`` or ``defaults.retry`` in YAML)::

    defaults:
      retry: {attempts: 5, immediate: 2, backoff: exponential, initial: 500ms, max: 1m, never: [ValueError]}

``attempts`` counts handler calls in all. The first delivery gets up to ``1 + immediate`` calls in
process, with a short backoff capped at ``immediate_max`` so a partition does not stall; after
that each further call is a redelivery the broker makes after the backoff (``nack(delay)``: the
consumer goes on with other events meanwhile). Handlers see the call number as
``context.attempt``. ``Retry(delay=...)`` asks for a delayed retry now; ``DeadLetter`` and the
``never`` exception types go to the dead-letter destination without retrying.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from mesh.config import RetryPolicy
from mesh.errors import DeadLetter, HandlerSignal, Retry
from mesh.hooks import hookimpl
from mesh.pipeline.stepping import taskless
from mesh.types import Context, Decision, Handle, HandlerLayer, SubscriptionInfo

name = "retry"

DEFAULT = RetryPolicy()


def policy_of(subscription: SubscriptionInfo) -> RetryPolicy:
    """The retry policy of a subscription (the defaults when none is set)."""
    return subscription.config.retry or DEFAULT


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait after failed call number ``attempt``."""
    if policy.backoff == "constant":
        delay = policy.initial
    else:
        delay = policy.initial * (2 ** max(0, attempt - 1))
    delay = min(delay, policy.max)
    if policy.jitter:
        delay = random.uniform(delay / 2, delay)
    return delay


def never_retried(policy: RetryPolicy, error: BaseException) -> bool:
    """Whether the error's type (or a base of it) is listed in ``never``."""
    if not policy.never:
        return False
    for cls in type(error).__mro__:
        if cls.__name__ in policy.never or f"{cls.__module__}.{cls.__qualname__}" in policy.never:
            return True
    return False


@hookimpl(trylast=True)
def mesh_handler_layers(subscription: SubscriptionInfo) -> HandlerLayer:
    policy = policy_of(subscription)

    def layer(next_: Handle) -> Handle:
        async def handle(ctx: Context) -> Any:
            k = ctx.delivery.attempt
            ctx.attempt = 1 if k <= 1 else min(k + policy.immediate, max(policy.attempts, k))
            left = policy.immediate if k <= 1 else 0
            while True:
                try:
                    return await next_(ctx)
                except HandlerSignal:
                    raise
                except Exception as exc:
                    if left <= 0 or ctx.attempt >= policy.attempts or never_retried(policy, exc):
                        raise
                    left -= 1
                    ctx.state["immediate_retries"] = ctx.state.get("immediate_retries", 0) + 1
                    await asyncio.sleep(min(backoff(policy, ctx.attempt), policy.immediate_max))
                    ctx.attempt += 1

        return handle

    return taskless(layer)


@hookimpl(trylast=True)
def mesh_retry_decision(context: Context, error: BaseException) -> Decision:
    policy = policy_of(context.subscription)
    if isinstance(error, DeadLetter):
        return Decision.dead_letter(error.reason)
    if never_retried(policy, error):
        return Decision.dead_letter(f"{type(error).__name__} is never retried: {error}")
    if context.attempt >= policy.attempts:
        return Decision.dead_letter(f"gave up after {context.attempt} attempt(s): {error}")
    if isinstance(error, Retry) and error.delay is not None:
        return Decision.retry(error.delay)
    return Decision.retry(backoff(policy, context.attempt))
