"""Batch handlers: many deliveries handed to one call, each still settled on its own.

A :class:`BatchSpec` stands where a :class:`~mesh.pipeline.route.HandlerSpec` stands in a
:class:`~mesh.pipeline.route.Route`, so every delivery still runs the whole per-event pipeline
(the plugins' delivery and handler layers, then settlement). Only the bottom of it differs: the
delivery joins the open batch and waits for the verdict on its own item.

==================================  ==========================================================
the batch handler                   each delivery of the batch
==================================  ==========================================================
returned                            acked (``handled``)
raised ``BatchFailed({i: exc})``    item *i* fails with ``exc`` (retried or dead-lettered by
                                    the retry policy, like a single handler raising ``exc``);
                                    every other item is acked
raised anything else                every item fails with that error (each retried per policy)
an item's data does not validate    that item is dead-lettered with the reason before the
(``list[Model]``)                   batch is handed over; the rest are delivered
==================================  ==========================================================

A batch is handed over when it holds ``max_size`` items or ``max_wait`` after its first item,
whichever is first. The subscription keeps ``max_size`` x ``concurrency`` deliveries in flight
(so a batch can fill) and runs at most ``concurrency`` batch calls at once, in the order the
batches closed. A failed item that is retried in process joins a later batch.

Handler parameter (exactly one): ``list[Event]``, ``list[Context]``, ``list[Model]`` (data
validated per item), or ``list``/``list[Any]``/unannotated (the data as decoded).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mesh.batch import BatchPolicy
from mesh.errors import BatchFailed, DeadLetter, InvalidHandler
from mesh.event import Event
from mesh.pipeline.injection import _resolve, data_adapter, matcher
from mesh.pipeline.stepping import adopt, step, stepped
from mesh.types import Context

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["BatchSpec"]

log = logging.getLogger("mesh.pipeline")

_LISTS = (list, Sequence, typing.Sequence, typing.List)  # noqa: UP006 - the old alias is matched too


class _Slot:
    """One delivery's place in a batch: its verdict, and what waits for it (a future when the
    pipeline runs in a task, the coroutine and its context when it was stepped by hand)."""

    __slots__ = ("context", "coro", "error", "future")

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.future: asyncio.Future[None] | None = None
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.context: contextvars.Context | None = None

    def __await__(self) -> Generator[Any, None, None]:
        yield self  # parks: the stepping driver keeps the coroutine here until the batch ran
        if self.error is not None:
            raise self.error


class _Batch:
    __slots__ = ("items", "slots", "timer")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.slots: list[_Slot] = []
        self.timer: asyncio.TimerHandle | None = None


class BatchSpec:
    """One batch handler: its function, topic, group, filters, policy, and the open batch.

    Each delivery's pipeline (plugins' layers, settlement) is started by :meth:`admit` (the
    route is called inline by the adapter's runner) and parks in the open batch until the batch
    handler ran. When every layer of the subscription is :func:`~mesh.pipeline.stepping.taskless`
    (:attr:`stepped`) the pipelines are stepped by hand, without a task each, and handed to a
    task only where they wait or fail (:mod:`mesh.pipeline.stepping`); otherwise each runs in a
    task of its own. :meth:`admit` makes the adapter wait while ``max_size`` x ``concurrency``
    deliveries are in flight.
    """

    batched = True

    def __init__(
        self,
        fn: Callable[..., Any],
        topic: str,
        group: str,
        filters: Mapping[str, Any],
        concurrency: int | None,
        policy: BatchPolicy,
    ) -> None:
        self.fn = fn
        self.topic = topic
        self.group = group
        self.filters = dict(filters)
        self.policy = policy
        self.batches = max(1, concurrency or 1)
        """Batch calls at once."""
        self.concurrency: int | None = policy.max_size * self.batches
        """Deliveries in flight for this handler (what the route asks the broker for)."""
        self.stepped = False
        """Whether the pipelines run without a task each (set by the route: every layer is taskless)."""
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self._matchers = [(name, matcher(value)) for name, value in self.filters.items()]
        self._param, self._kind, self._convert, self.item_type = _plan(fn, self.name)
        """``item_type``: what each item's data is validated as (``None``: events, contexts or raw data)."""
        self._open: _Batch | None = None
        self._calls: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._items: set[asyncio.Future[Any]] = set()
        self._in_flight = 0
        self._room: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None

    def matches(self, event: Event) -> bool:
        """Whether the event passes every filter."""
        for name, match in self._matchers:
            if not match(event.get(name)):
                return False
        return True

    # -- running each delivery's pipeline ---------------------------------------------------------

    async def admit(self, pipeline: Awaitable[Any]) -> None:
        """Start one delivery's pipeline (it parks in the open batch); returns at once, or waits
        while the subscription has its fill of deliveries in flight."""
        self._in_flight += 1
        if self.stepped and inspect.iscoroutine(pipeline):
            self._drive(pipeline, contextvars.copy_context())
        else:
            self._track(asyncio.ensure_future(pipeline))
        limit = self.concurrency or 1
        while self._in_flight >= limit:  # every caller waiting (adapters with tasks) shares one future
            room = self._room
            if room is None or room.done():
                room = self._room = asyncio.get_running_loop().create_future()
            await room

    def _drive(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> None:
        """Step a pipeline by hand to its next stop: parked in a batch, ended, or handed to a task."""
        try:
            yielded = step(coro, context)
        except (StopIteration, asyncio.CancelledError):  # settled, or given back as the app stops
            self._settled()
            return
        except Exception:  # the pipeline settles every delivery itself; this guards a bug
            log.exception("the pipeline of a batch item on %s raised; the broker redelivers it", self.topic)
            self._settled()
            return
        if isinstance(yielded, _Slot):
            yielded.coro, yielded.context = coro, context
        else:
            self._track(adopt(coro, yielded, context))

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._items.add(task)
        task.add_done_callback(self._item_done)

    def _item_done(self, task: asyncio.Future[Any]) -> None:
        self._items.discard(task)
        if not task.cancelled() and task.exception() is not None:  # settles every delivery itself: a bug
            log.error("the pipeline of a batch item on %s raised; the broker redelivers it", self.topic,
                      exc_info=task.exception())
        self._settled()

    def _settled(self) -> None:
        self._in_flight -= 1
        room = self._room
        if room is not None and not room.done() and self._in_flight < (self.concurrency or 1):
            self._room = None
            room.set_result(None)
        idle = self._idle
        if idle is not None and not idle.done() and self._in_flight == 0:
            idle.set_result(None)

    async def drain(self) -> None:
        """Hand over the open batch now and wait until every delivery in flight is settled."""
        if self._open is not None:
            self._close(self._open)
        if self._in_flight > 0:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle

    # -- the bottom of each pipeline: join the open batch ------------------------------------------

    async def call(self, ctx: Context) -> None:
        """Add the delivery's item to the open batch and wait for the verdict on it."""
        event = ctx.event
        assert event is not None
        item = self._item(ctx, event)
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            batch.timer = asyncio.get_running_loop().call_later(self.policy.seconds, self._close, batch)
        slot = _Slot()
        if not stepped():
            slot.future = asyncio.get_running_loop().create_future()
        batch.items.append(item)
        batch.slots.append(slot)
        if len(batch.items) >= self.policy.max_size:
            self._close(batch)
        if slot.future is None:
            await slot
        else:
            await slot.future

    def _item(self, ctx: Context, event: Event) -> Any:
        kind = self._kind
        if kind == "event":
            return event
        if kind == "context":
            return ctx
        if self._convert is None:
            return event.data
        try:
            return self._convert(event.data)
        except ValidationError as exc:
            summary = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<data>'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise DeadLetter(f"event data does not match the items of parameter {self._param!r}: {summary}") from exc

    def _close(self, batch: _Batch) -> None:
        """The batch is full or its time is up: hand it over (in a task of its own)."""
        if self._open is not batch:
            return
        self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(batch), name=f"mesh-batch:{self.topic}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        if self._calls is None:
            self._calls = asyncio.Semaphore(self.batches)
        slots = batch.slots
        try:
            async with self._calls:
                result = self.fn(**{self._param: batch.items})
                if inspect.isawaitable(result):
                    await result
        except BatchFailed as exc:
            errors = _errors(len(slots), exc.failed, self.name)
            for slot, error in zip(slots, errors, strict=True):
                self._verdict(slot, error)
        except Exception as exc:
            for slot in slots:
                self._verdict(slot, exc)
        except BaseException:  # cancelled: each item's pipeline gives its delivery back
            for slot in slots:
                self._verdict(slot, asyncio.CancelledError())
            raise
        else:
            for slot in slots:
                self._verdict(slot, None)

    def _verdict(self, slot: _Slot, error: BaseException | None) -> None:
        """Tell one item how it went: resolve its future, or resume its pipeline by hand (in a
        task when the batch was cancelled)."""
        future = slot.future
        if future is not None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            elif isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
            return
        coro, context = slot.coro, slot.context
        assert coro is not None and context is not None  # parked: the batch runs in a later loop turn
        slot.coro = slot.context = None
        slot.error = error
        if isinstance(error, asyncio.CancelledError):
            self._track(adopt(coro, None, context))
        else:
            self._drive(coro, context)


def _errors(size: int, failed: Mapping[int, BaseException], name: str) -> list[BaseException | None]:
    """Each item's error: the ones ``failed`` names failed, the rest succeeded."""
    unknown = [i for i in failed if not (isinstance(i, int) and 0 <= i < size)]
    if unknown:
        log.warning("batch handler %s reported failed items %s outside its batch of %d: ignored",
                    name, unknown[:10], size)
    errors: list[BaseException | None] = []
    for index in range(size):
        error = failed.get(index)
        if error is not None and not isinstance(error, Exception):
            error = RuntimeError(f"batch item failed: {error!r}")
        errors.append(error)
    return errors


def _plan(fn: Callable[..., Any], name: str) -> tuple[str, str, Callable[[Any], Any] | None, Any]:
    """(parameter, kind, converter, item type) of a batch handler: kind is event, context or data."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidHandler(f"batch handler {name}: cannot read its signature: {exc}") from exc
    params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(params) != 1 or params[0].kind is params[0].POSITIONAL_ONLY:
        raise InvalidHandler(
            f"batch handler {name}: takes exactly one parameter, by name, for the batch "
            "(list[Event], list[Context], list[Model] or list)"
        )
    param = params[0].name
    ann = _resolve(fn).get(param, inspect.Parameter.empty)
    if ann is inspect.Parameter.empty or ann is Any or ann in _LISTS:
        return param, "data", None, None
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin not in _LISTS or len(args) != 1:
        raise InvalidHandler(
            f"batch handler {name}: parameter {param!r} is {ann!r}; a batch handler takes a list "
            "(list[Event], list[Context], list[Model] or list)"
        )
    item = args[0]
    if item is Event:
        return param, "event", None, None
    if item is Context:
        return param, "context", None, None
    if item is Any:
        return param, "data", None, None
    try:
        return param, "data", data_adapter(item), item
    except Exception as exc:
        raise InvalidHandler(
            f"batch handler {name}: parameter {param!r}: the event data cannot be validated as {item!r}: {exc}"
        ) from exc


def batch_spec(
    runtime: Runtime, fn: Callable[..., Any], topic: str, group: str, filters: Mapping[str, Any],
    concurrency: int | None, policy: BatchPolicy,
) -> BatchSpec:
    """A :class:`BatchSpec`, its concurrency defaulting to the topic's ``concurrency`` setting."""
    if concurrency is None:
        concurrency = runtime.config.for_topic(topic).concurrency
    return BatchSpec(fn, topic, group, filters, concurrency, policy)
