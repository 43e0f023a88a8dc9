"""The hosting side: this instance's actor destination, its activations, reminders and draining.

Each instance hosting actor types consumes ``_mesh.actor.<instance id>`` (an exclusive ephemeral
subscription). A request there is checked, then queued on the actor's activation:

==========================  ==================================================================
request                     what happens
==========================  ==================================================================
deadline passed             dropped (the caller gave up)
type not hosted here        error reply ``ActorTypeNotFound``
unknown method              error reply ``MethodNotFound``
data does not fit           error reply code ``invalid_argument``
chain deeper than allowed   error reply ``ReentrancyError``
method ``_reminder``        runs ``on_reminder(name, data)`` (a fired reminder, see reminders)
same chain as running turn  a reentrant type runs it at once, nested in that turn
not active, placed elsewhere error reply ``NotOwner`` (the caller asks placement again)
otherwise                   queued in arrival order; the reply goes out when its turn ends
==========================  ==================================================================

On stop: no new requests, every activation finishes its queue, runs ``on_deactivate`` and
releases its lease, so the next owner can take the actor over at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate
from pydantic import ValidationError

from mesh import extensions as ext
from mesh.actors.activation import Activation, ActorType, Work
from mesh.actors.errors import ACTOR_TYPE_NOT_FOUND, NOT_OWNER, REENTRANCY_DEPTH, NotOwner
from mesh.actors.proxy import ActorCaller, Directory, actor_topic
from mesh.actors.reminders import Reminders
from mesh.brokers.base import Delivery, Subscription
from mesh.errors import EventError, MeshError
from mesh.event import Event, ExtensionValue, now
from mesh.invoke.protocol import (
    INVALID_ARGUMENT,
    METHOD_NOT_FOUND,
    MalformedMessage,
    error_data,
    error_reply,
    ok_reply,
    parse_request,
)

if TYPE_CHECKING:
    from mesh.actors.config import ActorsConfig
    from mesh.runtime import Runtime
    from mesh.state.handle import StateStore

__all__ = ["REMINDER_METHOD", "Host"]

REMINDER_METHOD = "_reminder"
"""The method of an actor call that delivers a fired reminder (runs ``on_reminder(name, data)``)."""

log = logging.getLogger("mesh.actors")
SHOWN_IDS = 100
"""Active actor ids listed per type in a heartbeat (the count is always exact)."""
KEPT_ANSWERS = 4096
"""Answers kept for calls sent again (a caller resends when it thinks the owner vanished)."""


def _text(value: ExtensionValue | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class Host:
    """The actor types this instance hosts, at run time (see the module docstring)."""

    def __init__(self, runtime: Runtime, config: ActorsConfig, types: dict[str, ActorType], store: StateStore,
                 caller: ActorCaller, directory: Directory, reminders: Reminders) -> None:
        self.runtime = runtime
        self.config = config
        self.types = types
        self.store = store
        self.caller = caller
        self.directory = directory
        self.reminders = reminders
        self.activations: dict[tuple[str, str], Activation] = {}
        self._closing: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sub: Subscription | None = None
        self.stopping = False
        self._taken: set[tuple[str, str]] = set()
        """(source, id) of the requests queued or running here: a copy sent again is dropped."""
        self._answers: OrderedDict[tuple[str, str], tuple[BaseException | None, Any]] = OrderedDict()
        """The last ``KEPT_ANSWERS`` answers of turns that ran: a copy sent again gets the answer again."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Consume this instance's actor destination."""
        topic = actor_topic(self.runtime.instance_id)
        self._sub = await self.runtime.broker.subscribe_ephemeral(topic, self._on_request, exclusive=True)

    async def stop(self, timeout: float) -> None:
        """Drain: finish queued turns, deactivate every actor, release leases."""
        self.stopping = True
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.stop(drain=False)
        for activation in list(self.activations.values()):
            activation.retire()
        tasks = [a.task for a in self.activations.values()] + list(self._closing.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.1, timeout))
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    # -- placement -----------------------------------------------------------------------------

    def placed_elsewhere(self, actor_type: str, actor_id: str) -> bool:
        """Whether placement (as this instance sees it) puts the actor on another live instance."""
        owner = self.directory.owner(actor_type, actor_id)
        return owner is not None and owner != self.runtime.instance_id

    def detach(self, activation: Activation) -> None:
        """Forget a closing activation (a new one for the same actor waits until it is closed)."""
        key = (activation.spec.name, activation.id)
        if self.activations.get(key) is activation:
            del self.activations[key]
            self._closing[key] = activation.task
            activation.task.add_done_callback(lambda t: self._closing.pop(key, None) if self._closing.get(key) is t
                                              else None)

    def submit(self, spec: ActorType, actor_id: str, work: Work) -> None:
        """Queue work on the actor's activation (activating it if needed)."""
        key = (spec.name, actor_id)
        activation = self.activations.get(key)
        if activation is None or not activation.put(work):
            activation = self.activations[key] = Activation(self, spec, actor_id, self._closing.get(key))
            activation.put(work)

    def heartbeat(self) -> list[dict[str, Any]]:
        """What presence announces: each hosted type with its active actors."""
        active: dict[str, list[str]] = {name: [] for name in self.types}
        for (name, actor_id) in self.activations:
            active[name].append(actor_id)
        return [{"type": t, "count": len(ids), "active": sorted(ids)[:SHOWN_IDS]} for t, ids in active.items()]

    # -- requests ------------------------------------------------------------------------------

    async def _on_request(self, delivery: Delivery) -> None:
        await delivery.ack()
        event = delivery.event
        if event is None:
            return
        try:
            request = parse_request(event)
        except MalformedMessage as exc:
            log.warning("dropped a malformed actor request: %s", exc)
            return
        if request.reply_to is None or (request.deadline is not None and request.deadline <= now()):
            return
        actor_type = _text(event.extensions.get(ext.ACTOR_TYPE))
        actor_id = _text(event.extensions.get(ext.ACTOR_ID))
        chain = _text(event.extensions.get(ext.CALL_CHAIN)) or None
        try:
            depth = int(_text(event.extensions.get(ext.CALL_DEPTH)) or 1)
        except ValueError:
            depth = 1
        spec = self.types.get(actor_type)
        if spec is None or not actor_id:
            self._error(event, "ActorTypeNotFound", f"{self.runtime.instance_id} hosts no actor type {actor_type!r} "
                        f"(it hosts: {', '.join(sorted(self.types)) or 'none'})", ACTOR_TYPE_NOT_FOUND)
            return
        method = request.method
        if method == REMINDER_METHOD:
            reminder = event.data if isinstance(event.data, dict) else {}
            args: tuple[Any, ...] = (str(reminder.get("name", "")), reminder.get("data"))
        elif method not in spec.methods:
            self._error(event, "MethodNotFound", f"actor type {actor_type!r} has no method {method!r} (it has: "
                        f"{', '.join(sorted(spec.methods))})", METHOD_NOT_FOUND)
            return
        else:
            convert = spec.methods[method]
            try:
                args = () if convert is None else (convert(event.data),)
            except (ValidationError, EventError, ValueError, TypeError) as exc:
                self._error(event, "InvalidArgument", f"the data does not fit {actor_type}.{method}: {exc}",
                            INVALID_ARGUMENT)
                return
        if depth > self.config.max_depth:
            self._error(event, "ReentrancyError", f"call chain {chain} is {depth} calls deep, over "
                        f"actors.max_depth ({self.config.max_depth})", REENTRANCY_DEPTH)
            return
        loop = asyncio.get_running_loop()
        deadline = None
        if request.deadline is not None:
            deadline = loop.time() + (request.deadline - now()).total_seconds()
        carrier = {k: _text(event.extensions.get(k)) for k in ("traceparent", "tracestate") if k in event.extensions}
        kind = "event" if method == "on_event" else "reminder" if method == REMINDER_METHOD else "call"
        if method == REMINDER_METHOD:
            method = "on_reminder"
        work = Work(kind, method, args, None, deadline, chain, depth, propagate.extract(carrier) if carrier else None,
                    event)
        taken = (event.source, event.id)
        if taken in self._taken:
            return  # a copy of a call queued or running here: its answer goes to the same reply id
        done = self._answers.get(taken)
        if done is not None:
            self.answer_later(event, *done)  # a copy of a call that ran here: the same answer
            return
        key = (actor_type, actor_id)
        activation = self.activations.get(key)
        if activation is not None and spec.reentrant and chain and activation.running_chain() == chain:
            self._spawn(activation.nested(work))
            return
        fresh = activation is None or activation.retiring
        if self.stopping or (fresh and self.placed_elsewhere(actor_type, actor_id)):
            self.answer_later(event, NotOwner("NotOwner", f"{self.runtime.instance_id} does not own actor "
                                              f"{actor_type}/{actor_id}", NOT_OWNER), None)
            return
        self._taken.add(taken)
        self.submit(spec, actor_id, work)

    def answer_later(self, request: Event, error: BaseException | None, result: Any) -> None:
        """Send the reply to a request (in the background)."""
        self._spawn(self.answer(request, error, result))

    async def answer(self, request: Event, error: BaseException | None, result: Any, ran: bool = False) -> None:
        """Send the reply to a request: the result, or the error with its type, message and code.
        ``ran``: a turn ran it (a copy of the request sent again later gets the same answer)."""
        taken = (request.source, request.id)
        if taken in self._taken:
            self._taken.discard(taken)
            if ran and not isinstance(error, NotOwner):  # NotOwner: its writes were fenced off
                self._answers[taken] = (error, result)
                if len(self._answers) > KEPT_ANSWERS:
                    self._answers.popitem(last=False)
        if error is None:
            reply = ok_reply(request, self.runtime.source, result)
        else:
            reply = error_reply(request, self.runtime.source, error_data(error))
        await self._send(request, reply)

    def _error(self, request: Event, type: str, message: str, code: str) -> None:
        reply = error_reply(request, self.runtime.source, error_data(type=type, message=message, code=code))
        self._spawn(self._send(request, reply))

    async def _send(self, request: Event, reply: Event) -> None:
        reply_to = _text(request.extensions.get(ext.REPLY_TO))
        try:
            await self.runtime.broker.publish_ephemeral(reply_to, reply)
        except MeshError as exc:  # e.g. a result that cannot be serialised: say so instead
            if reply.extensions.get(ext.STATUS) == "ok":
                await self._send(request, error_reply(request, self.runtime.source, error_data(exc)))
            else:
                log.warning("reply to actor request %s not sent: %s", request.id, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
