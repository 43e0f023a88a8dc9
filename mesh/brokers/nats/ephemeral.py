"""Ephemeral traffic of both NATS adapters, on core NATS: plain subscriptions, native no-responders.

The mesh's short-lived traffic (invocation requests and replies, presence) never goes into a
JetStream stream, on either broker type: persisting it buys nothing (a request is worth nothing
after its deadline, presence is resent every few seconds) and costs a stream write per message.

- Without a group a subscription is a plain core NATS subscription (every subscriber gets every
  message); with one, a queue subscription (the group's members share the messages).
- :meth:`NatsEphemeral.request` publishes with a NATS reply subject in a per-connection status
  inbox: when no subscriber listens, the server answers there at once with status 503 ("no
  responders"), and the returned future fails with :class:`~mesh.errors.NoResponders`. The real
  reply travels to the caller's reply topic like on every broker, so the mesh's correlation,
  late-reply counting and retries stay the same everywhere.

Deliveries are at most once: ``ack`` and ``nack`` do nothing (core NATS keeps nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

from mesh.brokers.base import Delivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.nats.common import FastClient, barrier, read, read_parts, to_headers
from mesh.codecs.binary import Binding, WireMessage, encode
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerError, DecodeError, NoResponders, PublishError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.nats.core import NatsBroker
    from mesh.brokers.nats.jetstream import JetStreamBroker

__all__ = ["NatsEphemeral"]

log = logging.getLogger("mesh.broker.nats")

NO_RESPONDERS = "503"

_Read = tuple[Event | None, WireMessage, DecodeError | None]  # a message read on arrival


class _Delivery(Delivery):
    __slots__ = ()

    async def _ack(self) -> None:
        pass

    async def _nack(self, delay: float | None) -> None:
        pass


class _Subscription(Subscription):
    """A core NATS subscription whose callback hands each message to a handler runner."""

    def __init__(self, owner: NatsEphemeral, topic: str, group: str | None, handler: DeliveryHandler, concurrency: int):
        self.topic = topic
        self.group = group or ""
        self.subject = owner.broker.name_of(topic)
        self._owner = owner
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._nsub: NatsSubscription | None = None
        self._running = True
        self._limit = owner.broker.settings.pending_limit  # beyond it messages are dropped, as NATS does
        self._mailbox: Mailbox[_Read | None] = Mailbox()
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: Client) -> None:
        queue = "_".join(self.group.split())
        self._nsub = await nc.subscribe(self.subject, queue=queue, cb=self._receive, pending_msgs_limit=self._limit)
        if isinstance(nc, FastClient):  # read off the socket into our mailbox, handled by our loop
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-nats:{self.subject}")
            nc.deliver_directly(self._nsub, self._arrived)
        await barrier(nc, self._owner.broker.settings.connect_timeout)  # the server has the SUB

    async def _receive(self, msg: Msg) -> None:
        """nats-py's callback, awaited in order by the subscription's own task: no extra hop."""
        if not self._running:
            return  # unsubscribed: what still arrives is dropped (at most once)
        event, raw, error = read(msg, NATS, self.topic, None)
        await self._runner.submit(_Delivery(self.topic, self.group, event, raw, error))

    def _arrived(self, subject: bytes, data: bytes, headers: dict[str, str] | None, checked: bool) -> None:
        mailbox = self._mailbox
        if self._running and mailbox.qsize() < self._limit:
            mailbox.put_nowait(read_parts(data, headers, checked, NATS, self.topic))

    async def _loop(self) -> None:
        get, submit, topic, group = self._mailbox.get, self._runner.submit, self.topic, self.group
        while True:
            item = await get()
            if item is None or not self._running:
                return  # stopped: what is still queued is dropped (at most once)
            event, raw, error = item
            await submit(_Delivery(topic, group, event, raw, error))

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        nsub, self._nsub = self._nsub, None
        if nsub is not None:
            nc = self._owner.broker._nc
            if isinstance(nc, FastClient):
                nc.forget(nsub)
            try:  # UNSUB; what had arrived is queued, then handled below when draining
                await asyncio.wait_for(nsub.drain(), self._owner.broker.settings.connect_timeout)  # type: ignore[no-untyped-call]
            except (TimeoutError, NatsError):
                with contextlib.suppress(NatsError):
                    await nsub.unsubscribe()
        task, self._task = self._task, None
        if task is not None:
            self._mailbox.put_nowait(None)
            if not drain:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            await self._runner.drain()
        self._owner.forget(self)


class NatsEphemeral:
    """The ephemeral capability of one NATS or JetStream broker (see the module docstring)."""

    def __init__(self, broker: NatsBroker | JetStreamBroker, binding: Binding) -> None:
        self.broker = broker
        self._binding = binding
        self._subs: list[_Subscription] = []
        self._inbox: str | None = None
        self._inbox_sub: asyncio.Task[str] | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def subscribe(
        self, topic: str, handler: DeliveryHandler, group: str | None, concurrency: int
    ) -> Subscription:
        sub = _Subscription(self, topic, group, handler, concurrency)
        try:
            await sub.start(self.broker._client())
        except NatsError as exc:
            raise BrokerError(f"nats at {self.broker.address}: cannot subscribe to {topic!r}: {exc!r}") from exc
        self._subs.append(sub)
        return sub

    def forget(self, sub: _Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def publish(self, topic: str, event: Event, reply: str = "") -> None:
        wire = encode(event, self._binding)
        try:
            await self.broker._client().publish(
                self.broker.name_of(topic), wire.body, reply=reply, headers=to_headers(wire)
            )
        except NatsError as exc:
            raise PublishError(
                f"nats at {self.broker.address} did not take {event.type} on {topic!r}: {exc!r}"
            ) from exc

    async def request(self, topic: str, event: Event) -> asyncio.Future[None]:
        """Publish with a status inbox as NATS reply subject: the future fails on "no responders"."""
        inbox = await self._status_inbox()
        token = os.urandom(8).hex()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        try:
            await self.publish(topic, event, reply=f"{inbox}.{token}")
        except BaseException:
            future.cancel()
            raise
        return future

    async def _status_inbox(self) -> str:
        if self._inbox is not None:
            return self._inbox
        if self._inbox_sub is None:
            self._inbox_sub = asyncio.get_running_loop().create_task(self._open_inbox())
        try:
            return await asyncio.shield(self._inbox_sub)
        except BaseException:
            self._inbox_sub = None
            raise

    async def _open_inbox(self) -> str:
        nc = self.broker._client()
        inbox = nc.new_inbox()
        try:
            await nc.subscribe(f"{inbox}.*", cb=self._on_status)  # SUB precedes our PUBs on the wire
        except NatsError as exc:
            raise PublishError(f"nats at {self.broker.address}: no status inbox: {exc!r}") from exc
        self._inbox = inbox
        return inbox

    async def _on_status(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if future is None or future.done():
            return
        status = (msg.headers or {}).get("Status")
        if status == NO_RESPONDERS:
            future.set_exception(NoResponders("the NATS server reports no responders"))

    async def close(self) -> None:
        """Stop every ephemeral subscription (before the connection closes)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        task, self._inbox_sub, self._inbox = self._inbox_sub, None, None
        if task is not None and not task.done():
            task.cancel()
        for future in list(self._waiting.values()):
            future.cancel()


class CoreNatsEphemeral:
    """Mixin of both NATS adapters: ephemeral destinations and requests on core NATS, through
    the adapter's :class:`NatsEphemeral` (``self._ephemeral``)."""

    _ephemeral: NatsEphemeral

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """A non-durable subscription on core NATS (see :meth:`mesh.brokers.base.Broker.subscribe_ephemeral`)."""
        return await self._ephemeral.subscribe(topic, handler, group, concurrency)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Publish on core NATS to an ephemeral destination."""
        await self._ephemeral.publish(topic, event)

    async def publish_request(self, topic: str, event: Event) -> asyncio.Future[None] | None:
        """Publish a request; the future fails with NoResponders when nobody listens."""
        return await self._ephemeral.request(topic, event)
