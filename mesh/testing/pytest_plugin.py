"""The pytest plugin of the mesh (entry point ``pytest11``), loaded wherever event-mesh is installed.

=================  =====================================================================
fixture            what it gives
=================  =====================================================================
``mesh_hub``       a fresh memory hub name for this test (its topics are forgotten after)
``mesh``           a :class:`~mesh.testing.kit.MeshTestKit` on that hub; while the test
                   runs, every App built gets the memory broker on the hub whatever its
                   config names (Kafka, RabbitMQ, ...), and ``mesh.run(app)`` moves an App
                   built earlier (at import) onto it
=================  =====================================================================

The fixtures are synchronous, so they work with pytest-asyncio in strict and in auto mode (and
with anyio): the helpers are awaited inside the test. Nothing happens in tests that do not ask
for a fixture. See docs/testing.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from mesh import brokers as _brokers
from mesh.brokers.memory import MemoryBroker
from mesh.testing.kit import MeshTestKit, memory_factory

__all__ = ["mesh", "mesh_hub"]


@pytest.fixture
def mesh_hub() -> Iterator[str]:
    """A memory hub name no other test uses; its topics are forgotten after the test."""
    kit = MeshTestKit()
    yield kit.hub
    MemoryBroker.reset(kit.hub)


@pytest.fixture
def mesh(mesh_hub: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MeshTestKit]:
    """A test kit on a fresh hub; every App built during the test uses that hub."""
    kit = MeshTestKit(mesh_hub)
    make = memory_factory(lambda: kit.hub)
    patched = tuple(dataclasses.replace(info, target=make, client=None) for info in _brokers.BUILTIN_BROKERS)
    monkeypatch.setattr(_brokers, "BUILTIN_BROKERS", patched)
    yield kit
    kit.close()
