"""The event loop every benchmark process runs on: ``--loop asyncio`` (default) or ``--loop uvloop``.

The choice travels in ``MESH_BENCH_LOOP``, so the spawned producer and consumer processes of a
row inherit it: the mesh, the raw client and FastStream are measured under the same loop.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from mesh import loop as mesh_loop

ENV = "MESH_BENCH_LOOP"
T = TypeVar("T")


def choose(name: str | None) -> str:
    """Use loop ``name`` here and in every process started from now on; checks that it is installed."""
    name = name or os.environ.get(ENV, "asyncio")
    mesh_loop.loop_factory(name)  # uvloop missing: a clear error now, not in a child process
    os.environ[ENV] = name
    return name


def current() -> str:
    """The loop the benchmarks run on."""
    return os.environ.get(ENV, "asyncio")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    return mesh_loop.run(main, current())
