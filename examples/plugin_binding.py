"""A third-party binding from a plugin: a ``ticker`` input and a ``notebook`` output.

A plugin adds binding types exactly as the built-ins are added: ``mesh_register_components``
calls ``registry.add(ComponentInfo(kind="binding", ...))`` with the class and its options model.
The config then validates ``type: ticker`` like ``type: http-in``, and the app starts it::

    bindings:
      clock: {type: ticker, topic: ticks, count: 3}
      notes: {type: notebook, from_topic: ticks}

Run it: ``python examples/plugin_binding.py`` (in-process broker, no server needed).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import Field

from mesh import App, hookimpl
from mesh.bindings import BindingFeatures, InputBinding, OutputBinding
from mesh.bindings.options import InputOptions, OutputOptions
from mesh.components import ComponentInfo, Registry


class TickerOptions(InputOptions):
    """``ticker``: ``count`` events, ``interval`` seconds apart."""

    count: int = Field(3, ge=1)
    interval: float = 0.01


class Ticker(InputBinding[TickerOptions]):
    """Emit ``tick`` events numbered from 1 (each confirmed by the broker before the next)."""

    type = "ticker"
    features = BindingFeatures(direction="input", delivery="each tick confirmed before the next")

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        for n in range(1, self.options.count + 1):
            self.stats.add("received")
            await self.emit(self.wrap({"n": n}, subject=str(n)))
            await asyncio.sleep(self.options.interval)

    async def stop(self) -> None:
        self._task.cancel()


class Notebook(OutputBinding[OutputOptions]):
    """Keep notes in memory: ``write`` adds one, ``read`` returns them all."""

    type = "notebook"
    features = BindingFeatures(direction="output", operations=frozenset({"write", "read"}), delivery="in memory")
    default_operation: ClassVar[str] = "write"

    def __init__(self, name: str, options: OutputOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self.notes: list[Any] = []

    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        if operation == "write":
            self.notes.append(data)
            return len(self.notes)
        return list(self.notes)


class ClockPlugin:
    """Registers the two binding types."""

    name = "clock"

    @hookimpl
    def mesh_register_components(self, registry: Registry) -> None:
        registry.add(ComponentInfo(kind="binding", type="ticker", target=Ticker, options=TickerOptions))
        registry.add(ComponentInfo(kind="binding", type="notebook", target=Notebook, options=OutputOptions))


async def main() -> list[Any]:
    """Three ticks flow from the ticker, over the broker, into the notebook; returns its notes."""
    config = {
        "broker": {"type": "memory", "options": {"name": "binding-demo"}},
        "bindings": {
            "clock": {"type": "ticker", "topic": "ticks", "count": 3},
            "notes": {"type": "notebook", "from_topic": "ticks"},
        },
    }
    app = App("clockwork", config=config, plugins=[ClockPlugin()])
    async with app:
        notes = app.binding("notes")
        for _ in range(500):
            if len(await notes.invoke("read")) == 3:
                break
            await asyncio.sleep(0.01)
        return list(await notes.invoke("read"))


if __name__ == "__main__":
    print(asyncio.run(main()))
