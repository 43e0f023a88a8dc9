"""A steady load of invocations (10 a second, each with its own timeout) and what became of each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mesh import App


@dataclass
class Load:
    """Calls ``target.method`` every ``period`` seconds until stopped; records (start, ok, answerer)."""

    caller: App
    target: str
    method: str = "echo"
    period: float = 0.1
    timeout: float = 1.0
    results: list[tuple[float, bool, str]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _calls: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._calls, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n, begun = 0, loop.time()
        while True:
            task = loop.create_task(self._one(n))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
            n += 1
            await asyncio.sleep(max(0.0, begun + n * self.period - loop.time()))

    async def _one(self, n: int) -> None:
        t = asyncio.get_running_loop().time()
        try:
            reply: Any = await self.caller.invoke(self.target, self.method, n, timeout=self.timeout)
        except Exception as exc:
            self.results.append((t, False, type(exc).__name__))
            return
        self.results.append((t, True, str(reply["by"])))

    def between(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        """The calls started in [start, end)."""
        return [r for r in self.results if start <= r[0] < end]

    def failures(self) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if not r[1]]
