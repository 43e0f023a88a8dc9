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

Deliveries are at most once (:class:`~mesh.brokers.base.AtMostOnceDelivery`: ``ack`` and
``nack`` do nothing, core NATS keeps nothing). Messages read straight off the socket wait in a
:class:`~mesh.brokers.nats.messages.Backlog` capped by ``pending_limit`` and
``pending_bytes_limit``.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

from mesh.brokers.base import AtMostOnceDelivery, DeliveryHandler, HandlerRunner, Mailbox, Subscription
from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.messages import Backlog, Read, read_parts, to_headers
from mesh.codecs.binary import encode
from mesh.codecs.bindings import NATS
from mesh.errors import BrokerError, NoResponders, PublishError
from mesh.event import Event

__all__ = ["NO_RESPONDERS", "NatsEphemeral"]

NO_RESPONDERS = "503"


class _Subscription(Subscription):
    """A core NATS subscription whose callback hands each message to a handler runner."""

    def __init__(
        self, owner: NatsEphemeral, topic: str, group: str | None, handler: DeliveryHandler, concurrency: int
    ) -> None:
        conn = owner.conn
        self.topic = topic
        self.group = group or ""
        self.subject = conn.name_of(topic)
        self._conn = conn
        self._owner = owner
        self._runner = HandlerRunner(handler, concurrency, topic)
        self._nsub: NatsSubscription | None = None
        self._running = True
        settings = conn.settings
        self._limit = settings.pending_limit  # beyond it messages are dropped, as NATS does
        self._bytes_limit = settings.pending_bytes_limit
        self._backlog = Backlog(self.subject, self._limit, self._bytes_limit)
        self._mailbox: Mailbox[Read | None] = Mailbox()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        nc = self._conn.client()
        queue = "_".join(self.group.split())
        self._nsub = await nc.subscribe(
            self.subject,
            queue=queue,
            cb=self._receive,
            pending_msgs_limit=self._limit,
            pending_bytes_limit=self._bytes_limit,
        )
        fast = self._conn.fast()
        if fast is not None:  # read off the socket into our mailbox, handled by our loop
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"mesh-nats:{self.subject}")
            fast.deliver_directly(self._nsub, self._arrived)
        await self._conn.barrier()  # the server has the SUB

    async def _receive(self, msg: Msg) -> None:
        """nats-py's callback, awaited in order by the subscription's own task: no extra hop."""
        if not self._running:
            return  # unsubscribed: what still arrives is dropped (at most once)
        event, raw, error = read_parts(msg.data, msg.headers, False, NATS, self.topic)
        await self._runner.submit(AtMostOnceDelivery(self.topic, self.group, event, raw, error))

    def _arrived(self, subject: bytes, data: bytes, headers: dict[str, str] | None, checked: bool) -> None:
        mailbox = self._mailbox
        if self._running and self._backlog.room(mailbox.qsize(), len(data)):
            mailbox.put_nowait(read_parts(data, headers, checked, NATS, self.topic))

    async def _loop(self) -> None:
        get, submit, backlog = self._mailbox.get, self._runner.submit, self._backlog
        topic, group = self.topic, self.group
        while True:
            item = await get()
            if item is None or not self._running:
                return  # stopped: what is still queued is dropped (at most once)
            event, raw, error = item
            backlog.bytes -= len(raw.body)
            await submit(AtMostOnceDelivery(topic, group, event, raw, error))

    async def stop(self, drain: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        nsub, self._nsub = self._nsub, None
        if nsub is not None:  # UNSUB; what had arrived is queued, then handled below when draining
            await self._conn.unsubscribe(nsub)
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
    """The ephemeral destinations of one NATS or JetStream connection (see the module docstring)."""

    def __init__(self, conn: NatsConnection) -> None:
        self.conn = conn
        self._subs: list[_Subscription] = []
        self._inbox: str | None = None
        self._inbox_sub: asyncio.Task[str] | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._asked = 0  # the last request's token in the status inbox (unique per connection's inbox)

    async def subscribe(
        self, topic: str, handler: DeliveryHandler, group: str | None, concurrency: int
    ) -> Subscription:
        """A plain (or, with ``group``, queue) subscription on core NATS."""
        sub = _Subscription(self, topic, group, handler, concurrency)
        try:
            await sub.start()
        except NatsError as exc:
            raise BrokerError(f"nats at {self.conn.address}: cannot subscribe to {topic!r}: {exc!r}") from exc
        self._subs.append(sub)
        return sub

    def forget(self, sub: _Subscription) -> None:
        """Drop a stopped subscription."""
        if sub in self._subs:
            self._subs.remove(sub)

    async def publish(self, topic: str, event: Event, reply: str = "") -> None:
        """Publish on core NATS (nothing is stored)."""
        conn = self.conn
        wire = encode(event, conn.wire)
        try:
            await conn.client(PublishError).publish(
                conn.name_of(topic), wire.body, reply=reply, headers=to_headers(wire)
            )
        except NatsError as exc:
            raise PublishError(f"nats at {conn.address} did not take {event.type} on {topic!r}: {exc!r}") from exc

    async def request(self, topic: str, event: Event) -> asyncio.Future[None]:
        """Publish with a status inbox as NATS reply subject: the future fails on "no responders"."""
        inbox = self._inbox or await self._status_inbox()
        self._asked += 1
        token = str(self._asked)
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
        nc = self.conn.client()
        inbox = nc.new_inbox()
        try:
            await nc.subscribe(f"{inbox}.*", cb=self._on_status)  # SUB precedes our PUBs on the wire
        except NatsError as exc:
            raise PublishError(f"nats at {self.conn.address}: no status inbox: {exc!r}") from exc
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
