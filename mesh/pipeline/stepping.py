"""Running a batched delivery's pipeline by hand, without a task, until it needs one.

A batch subscription parks every delivery's pipeline in its open batch until the batch handler
ran. In a task of its own each parked pipeline costs a task, a future and two loop turns; stepped
by hand (``coroutine.send`` in the delivery's own :mod:`contextvars` context) it costs none of
them. That is safe only for code that neither waits on I/O nor needs a current task
(``asyncio.timeout``, ``asyncio.current_task``), so:

=============================  =================================================================
where                          what makes it safe
=============================  =================================================================
before the batch               every layer of the subscription is marked :func:`taskless` (else
                               every delivery runs in a task, as before)
a wait on anything             the pipeline is handed to a task of its own at that point
                               (:func:`adopt`), which takes the wait over
after the verdict              resumed by hand only when the item succeeded and the delivery's
                               ack needs no task (``Delivery.taskless_ack``); else in a task
a failure being settled        :func:`own_task` moves the pipeline into a task first (retries
                               and dead letters do I/O)
=============================  =================================================================
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["NEEDS_TASK", "adopt", "is_taskless", "own_task", "step", "stepped", "taskless"]

T = TypeVar("T")


class _Stepping(threading.local):
    on = False
    """True only while a pipeline is being stepped by hand (not a context variable: a task the
    pipeline starts meanwhile must not inherit it)."""


_STEPPING = _Stepping()

NEEDS_TASK = object()
"""What a pipeline stepped by hand yields to ask for a task of its own (see :func:`own_task`)."""


def taskless(layer: T) -> T:
    """Mark a handler or delivery layer whose code around ``next`` neither waits on anything nor
    needs a current task (no ``asyncio.timeout``): batch subscriptions may then run it without a
    task per event. Returns the layer."""
    layer.mesh_taskless = True  # type: ignore[attr-defined]
    return layer


def is_taskless(layer: object) -> bool:
    """Whether the layer was marked with :func:`taskless`."""
    return getattr(layer, "mesh_taskless", False) is True


def stepped() -> bool:
    """Whether the running code is a pipeline stepped by hand (no task of its own)."""
    return _STEPPING.on


def step(coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> Any:
    """Run ``coro`` by hand in ``context`` up to its next yield; returns what it yielded
    (``StopIteration`` or its exception propagate when it ends)."""
    return context.run(_send, coro)


def _send(coro: Coroutine[Any, Any, Any]) -> Any:
    outer, _STEPPING.on = _STEPPING.on, True
    try:
        return coro.send(None)
    finally:
        _STEPPING.on = outer


@types.coroutine
def own_task() -> Generator[Any, None, None]:
    """Await before code that may wait or need a task: a pipeline stepped by hand is handed to a
    task of its own here; in a task it is a no-op."""
    if _STEPPING.on:
        yield NEEDS_TASK


def adopt(coro: Coroutine[Any, Any, Any], yielded: Any, context: contextvars.Context) -> asyncio.Task[Any]:
    """A task that carries on ``coro``, stepped by hand so far, from the ``yielded`` value it
    stopped at (a future it waits on, or ``None``/:data:`NEEDS_TASK` to carry on next turn)."""
    first = None if yielded is NEEDS_TASK else yielded
    return asyncio.get_running_loop().create_task(_carry_on(coro, first), context=context)


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    try:
        yield first  # the task waits on it as the coroutine would have
    except BaseException as exc:  # the wait failed or the task was cancelled: the coroutine sees it
        try:
            first = coro.throw(exc)
        except StopIteration as stop:
            return stop.value
        return (yield from _carry_on(coro, first))
    return (yield from coro)
