"""Batch subscriptions step each delivery's pipeline by hand when every layer is taskless, and
hand it to a task of its own wherever it waits or fails (mesh.pipeline.stepping)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from mesh import App, Context, Event, hookimpl
from mesh.batch import BatchPolicy
from mesh.errors import BatchFailed
from mesh.pipeline.stepping import taskless
from mesh.types import Handle, HandlerLayer
from tests.support import fast_retry_hub, wait_for


@pytest.fixture
def cfg() -> Any:
    yield from fast_retry_hub("stepping")


class _Tasks:
    """Counts the tasks the loop creates, publish_many's own (one per event sent) aside."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any) -> asyncio.Task[Any]:
        if getattr(coro, "__qualname__", "") != "_one":  # mesh.bulk's task per event published
            self.count += 1
        return asyncio.Task(coro, loop=loop, **kw)


class _Layer:
    """A handler layer that notes the task each delivery's layer code runs in, after the handler."""

    def __init__(self, marked: bool, wait: bool = False) -> None:
        self.marked, self.wait = marked, wait
        self.tasks: list[asyncio.Task[Any] | None] = []

    @hookimpl
    def mesh_handler_layers(self) -> HandlerLayer:
        def layer(next_: Handle) -> Handle:
            async def handle(ctx: Context) -> Any:
                result = await next_(ctx)
                if self.wait:
                    await asyncio.sleep(0.001)
                self.tasks.append(asyncio.current_task())
                return result

            return handle

        return taskless(layer) if self.marked else layer


async def _run(cfg: dict[str, Any], layer: _Layer, n: int = 50) -> int:
    app = App("stepping", config=cfg)
    app.plugins.register(layer)
    got: list[int] = []

    @app.subscribe("orders", batch=BatchPolicy(max_size=n, max_wait=0.05))
    async def handle(events: list[Event]) -> None:
        got.extend(e.data for e in events)

    tasks = _Tasks()
    async with app:
        await asyncio.sleep(0.01)
        asyncio.get_running_loop().set_task_factory(tasks)
        try:
            await app.publish_many("orders", list(range(n)), type="n")
            await wait_for(lambda: len(layer.tasks) == n, what="every delivery through the layer")
        finally:
            asyncio.get_running_loop().set_task_factory(None)
    assert sorted(got) == list(range(n))
    return tasks.count


async def test_taskless_layers_run_a_batch_without_a_task_per_event(cfg: dict[str, Any]) -> None:
    layer = _Layer(marked=True)
    created = await _run(cfg, layer)
    assert created < 10  # the batch call and the loop's own, not one per event
    assert {t.get_name() for t in layer.tasks if t is not None} <= {"mesh-batch:orders"}


async def test_a_layer_not_marked_taskless_gets_a_task_per_event(cfg: dict[str, Any]) -> None:
    layer = _Layer(marked=False)
    created = await _run(cfg, layer)
    assert created >= 50
    assert len({id(t) for t in layer.tasks}) == 50 and None not in layer.tasks


async def test_a_stepped_pipeline_that_waits_carries_on_in_a_task_of_its_own(cfg: dict[str, Any]) -> None:
    layer = _Layer(marked=True, wait=True)
    await _run(cfg, layer)
    assert len({id(t) for t in layer.tasks}) == 50 and None not in layer.tasks


async def test_failed_items_are_retried_and_dead_lettered_in_a_task_of_their_own(cfg: dict[str, Any]) -> None:
    app = App("stepping", config=cfg)
    seen: list[tuple[str, str]] = []

    class Outcomes:
        @hookimpl
        def mesh_delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
            task = asyncio.current_task()
            seen.append((outcome, task.get_name() if task is not None else "<none>"))

    app.plugins.register(Outcomes())

    @app.subscribe("orders", batch=BatchPolicy(max_size=3, max_wait=0.02))
    async def handle(events: list[Event]) -> None:
        failed = {i: ValueError("odd") for i, e in enumerate(events) if e.data % 2}
        if failed:
            raise BatchFailed(failed)

    async with app:
        await app.publish_many("orders", [0, 1, 2], type="n")
        await wait_for(lambda: len(seen) == 4, what="two handled, one retried then dead-lettered")
    assert sorted(o for o, _ in seen) == ["dead_letter", "handled", "handled", "retry"]
    for outcome, task in seen:
        if outcome != "handled":
            assert task != "<none>" and not task.startswith("mesh-batch")


async def test_a_cancelled_batch_call_gives_its_stepped_deliveries_back(cfg: dict[str, Any]) -> None:
    app = App("stepping", config=cfg)
    calls: list[list[int]] = []
    stuck = asyncio.Event()

    @app.subscribe("orders", batch=BatchPolicy(max_size=3, max_wait=0.02))
    async def handle(events: list[Event]) -> None:
        calls.append([e.data for e in events])
        if len(calls) == 1:
            stuck.set()
            await asyncio.Event().wait()  # never returns: cancelled below

    async with app:
        await app.publish_many("orders", [1, 2, 3], type="n")
        await asyncio.wait_for(stuck.wait(), 5)
        (call,) = [t for t in asyncio.all_tasks() if t.get_name() == "mesh-batch:orders"]
        call.cancel()
        await wait_for(lambda: len(calls) == 2, what="the deliveries given back and delivered again")
    assert calls == [[1, 2, 3], [1, 2, 3]]
