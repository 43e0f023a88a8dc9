"""The event loop ``mesh run`` serves on: asyncio's own, or uvloop when asked and installed.

==========  ===========================================================================
choice      loop
==========  ===========================================================================
asyncio     the standard library's (the default)
uvloop      uvloop's; ``ComponentNotInstalled`` naming the ``fast`` extra if it is missing
auto        uvloop's when it is installed, else asyncio's
==========  ===========================================================================

Set it in ``mesh.yaml`` (``event_loop: uvloop``) or per run (``mesh run --loop uvloop``: the flag
wins). An app started by your own ``asyncio.run`` keeps whatever loop you give it; use
:func:`run` to get the same choice there.

>>> import asyncio
>>> async def two() -> int:
...     return 2
>>> run(two(), "asyncio")
2
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from mesh.errors import ComponentNotInstalled, ConfigError

__all__ = ["LOOPS", "EventLoopName", "loop_factory", "run"]

EventLoopName = Literal["asyncio", "uvloop", "auto"]
LOOPS: tuple[EventLoopName, ...] = ("asyncio", "uvloop", "auto")

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of kind ``name`` (see the table above)."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name not in ("uvloop", "auto"):
        raise ConfigError([("event_loop", f"unknown event loop {name!r}: use one of {', '.join(LOOPS)}")])
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if name == "auto":
            return asyncio.new_event_loop
        raise ComponentNotInstalled("event loop", "uvloop", "fast") from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], loop: str = "asyncio", *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on a loop of kind ``loop``."""
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()  # never awaited: close it so Python does not warn about it
        raise
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)
