"""Retry intervals (constant or exponential with jitter) and a retry budget.

The budget (as gRPC's and Envoy's) bounds retries by first attempts: over the last
:data:`WINDOW` seconds, retries may be at most ``budget`` per first attempt plus ``budget_min``
per second. A failing dependency then sees at most ``1 + budget`` times its normal load.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh.resiliency.config import RetryPolicySpec

__all__ = ["WINDOW", "RetryBudget", "interval", "may_retry"]

WINDOW = 10.0
"""Seconds the retry budget looks back."""


def interval(policy: RetryPolicySpec, retry: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first)."""
    if policy.policy == "constant":
        base = policy.initial
    else:
        base = min(policy.max_interval, policy.initial * 2 ** max(retry - 1, 0))
    if policy.jitter:
        base *= 0.5 + 0.5 * (rng or random).random()
    return base


def may_retry(policy: RetryPolicySpec, retries_done: int) -> bool:
    """Whether the policy allows another retry after ``retries_done``."""
    return policy.max_retries < 0 or retries_done < policy.max_retries


class RetryBudget:
    """Counts first attempts and retries over a sliding window (see the module docstring)."""

    def __init__(self, ratio: float, minimum_per_second: float) -> None:
        self.ratio = ratio
        self.minimum = minimum_per_second * WINDOW
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, t: float) -> None:
        for q in (self._calls, self._retries):
            while q and q[0] < t - WINDOW:
                q.popleft()

    def call(self, t: float) -> None:
        """A first attempt started at ``t`` (event-loop time); calls older than the window are
        forgotten here too, so a caller that never retries keeps one window of them, not all."""
        calls = self._calls
        calls.append(t)
        while calls[0] < t - WINDOW:
            calls.popleft()

    def take(self, t: float) -> bool:
        """Whether a retry may start at ``t``; counts it if so."""
        self._trim(t)
        if len(self._retries) >= self.minimum + self.ratio * len(self._calls):
            return False
        self._retries.append(t)
        return True
