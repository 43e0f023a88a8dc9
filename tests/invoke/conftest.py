"""Shared set-up of the invocation tests: a broker spec per module, recording plugins."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from mesh import Runtime, hookimpl
from mesh.invoke import Invocation, InvokeHandle, InvokeLayer
from tests.conftest import _spec
from tests.support import ALL_BROKERS, BrokerSpec


@pytest.fixture(scope="module", params=[pytest.param(k, marks=getattr(pytest.mark, k)) for k in ALL_BROKERS])
def module_spec(request: pytest.FixtureRequest) -> BrokerSpec:
    """Like ``broker_spec`` (every broker in turn), for apps shared by a module's tests."""
    return _spec(request.param, request)


class Recorder:
    """A plugin that records invocation outcomes and the calls an App made."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str, str]] = Counter()
        """(side, method, outcome) -> count."""
        self.peers: Counter[tuple[str, str]] = Counter()
        """(outcome, peer) -> count."""
        self.calls: list[Invocation] = []

    def count(self, side: str, outcome: str, method: str | None = None) -> int:
        return sum(n for (s, m, o), n in self.outcomes.items() if s == side and o == outcome and method in (None, m))

    @hookimpl
    def mesh_invocation_outcome(
        self, runtime: Runtime, side: str, method: str, peer: str, outcome: str, error: BaseException | None
    ) -> None:
        self.outcomes[(side, method, outcome)] += 1
        self.peers[(outcome, peer)] += 1

    @hookimpl
    def mesh_invoke_layers(self, runtime: Runtime) -> InvokeLayer:
        def layer(next_: InvokeHandle) -> InvokeHandle:
            async def invoke(call: Invocation) -> Any:
                self.calls.append(call)
                return await next_(call)

            return invoke

        return layer
