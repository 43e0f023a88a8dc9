"""The Broker contract: the seam every adapter implements, and what it hands the core.

========================  ========  ===========================================================
member                    required  what
========================  ========  ===========================================================
``features``, ``type``    yes       class data: a :class:`Features` record and the type name
``options_model``         no        the pydantic model of ``broker.options`` (validated once,
                                    here, into ``self.settings``)
``connect`` / ``close``   yes       bounded connect; close stops every subscription, drained
``publish``               yes       returns once the broker has the event
``publish_many``          no        many events of one topic, pipelined; failures by index
                                    (the fallback publishes one after the other)
``subscribe``             yes       returns once consuming; hands out :class:`Delivery` objects
``Delivery._ack``         yes       forget the message for this group
``Delivery._requeue``     yes       give it back now (``nack()``); ``nack(delay)`` waits in
                                    process unless the adapter overrides ``_nack`` with a
                                    native delay (``Features.native_delay``)
``ensure_topic``          no        create broker-side objects before first use
``subscribe_ephemeral``,  no        the mesh's own short-lived traffic (replies, presence,
``publish_ephemeral``,              invocation requests); the fallback is an ordinary group
``publish_request``                 (``Features.ephemeral`` says an adapter does better)
``history``, ``groups``   no        composed parts for replay (:mod:`mesh.brokers.capabilities`)
``tls_supported``,        no        which parts of ``broker.tls`` / ``broker.auth`` the adapter
``auth_fields``                     wires (:mod:`mesh.brokers.tls`); the rest is refused here
========================  ========  ===========================================================

Optional too: ``subscribe_concurrency``, how many ``subscribe`` calls an app's start may have in
flight at once (64 by default; 1: one after another).

So a minimal adapter is four methods and a delivery with two; everything clever (retries, dead
letters, request/reply, tracing, replay) sits above it and is written once.

Who acks: the adapter calls the handler with a :class:`Delivery`; the handler (the core's
dispatch) must end every delivery with exactly one :meth:`Delivery.ack` or
:meth:`Delivery.nack`. A delivery never ended is held by the broker and redelivered when the
consumer goes away. Handlers run on the event loop; the adapter runs at most ``concurrency`` of
them at once per subscription and never blocks the loop itself.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import ssl
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from mesh.brokers.tls import AuthOptions, TlsOptions, ssl_context
from mesh.codecs.binary import Binding, WireMessage
from mesh.components import ComponentOptions
from mesh.errors import ConfigError, DecodeError, MeshError
from mesh.event import Event
from mesh.extensions import RESERVED_PREFIX
from mesh.urls import mask_url

__all__ = [
    "RESERVED_PREFIX",
    "failures_of",
    "AtMostOnceDelivery",
    "Broker",
    "BrokerOptions",
    "Delivery",
    "DeliveryHandler",
    "Features",
    "HandlerRunner",
    "Mailbox",
    "Subscription",
    "publish_windowed",
]

log = logging.getLogger("mesh.broker")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


GENERIC_BINDING = Binding(write_prefix="ce_")
"""The binding of an adapter that names none (headers ``ce_<attr>``)."""


class BrokerOptions(ComponentOptions):
    """Base of every broker's options model (``broker.options``): unknown keys are errors."""


@dataclass(frozen=True, slots=True)
class Features:
    """What a broker can do natively; used to pick strategies and to skip contract tests."""

    name: str
    persistent: bool = False
    """Published events survive a consumer (and a broker restart where configured)."""
    consumer_groups: bool = True
    """Instances of one group share the work; groups fan out."""
    order_by_key: bool = False
    """Events with one ``partitionkey`` are delivered in order within a group."""
    history: bool = False
    """A group created after publishing still sees earlier events (the broker keeps a log)."""
    history_by_time: bool = False
    """The log can be read from a point in time."""
    native_delay: bool = False
    """``nack(delay=...)`` is done by the broker itself, without holding the consumer."""
    native_request_reply: bool = False
    """The broker has its own request/reply: it reports "no responders" for a request at once
    (:meth:`Broker.publish_request` returns a future for that)."""
    headers: bool = True
    """Messages carry headers (binary content mode)."""
    redelivery_count: bool = False
    """Deliveries say how often the broker delivered them."""
    group_delivery: bool = False
    """An event can be delivered to one group only (a replay; see :mod:`mesh.brokers.capabilities`)."""
    ephemeral: bool = False
    """``subscribe_ephemeral`` is native: nothing durable is made per subscriber or left behind
    (otherwise the base class falls back to an ordinary group, see :meth:`Broker.subscribe_ephemeral`)."""


class Delivery:
    """One delivered message: the decoded event (or the decode error) and the ack handle."""

    __slots__ = ("_done", "attempt", "error", "event", "group", "raw", "topic")

    taskless_ack: ClassVar[bool] = False
    """Whether :meth:`ack` never waits and needs no task of its own (it only marks state in
    process): a batch subscription may then ack the delivery without a task per event."""

    def __init__(
        self,
        topic: str,
        group: str,
        event: Event | None,
        raw: WireMessage | None = None,
        error: DecodeError | None = None,
        attempt: int = 1,
    ) -> None:
        self.topic = topic
        self.group = group
        self.event = event
        self.raw = raw
        self.error = error
        self.attempt = attempt
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the delivery was acked or nacked."""
        return self._done

    async def ack(self) -> None:
        """The handler is done with it: the broker may forget it for this group."""
        if not self._done:
            self._done = True
            await self._ack()

    async def nack(self, delay: float | None = None) -> None:
        """Give it back: it is redelivered, after ``delay`` seconds where the broker can wait."""
        if not self._done:
            self._done = True
            await self._nack(delay)

    async def _ack(self) -> None:  # pragma: no cover - adapters override
        raise NotImplementedError

    async def _requeue(self) -> None:  # pragma: no cover - adapters override (or _nack)
        """Give the message back to the broker now, to be delivered again."""
        raise NotImplementedError

    async def _nack(self, delay: float | None) -> None:
        """Give it back, after ``delay`` seconds held in process (adapters with a native delay override).

        The message stays unacknowledged while it waits, so a process that dies meanwhile loses
        nothing: the broker redelivers it as it would any unacknowledged message.
        """
        if not delay or delay <= 0:
            await self._requeue()
            return
        task = asyncio.get_running_loop().create_task(self._requeue_later(delay))
        _WAITING.add(task)
        task.add_done_callback(_WAITING.discard)

    async def _requeue_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._requeue()
        except Exception:  # the connection went away: the broker redelivers the unacked message
            log.warning("a delayed redelivery on %s could not be handed back; the broker redelivers it", self.topic)


class AtMostOnceDelivery(Delivery):
    """A delivery the broker does not track (ephemeral traffic): ack and nack only end it."""

    __slots__ = ()
    taskless_ack = True

    async def _ack(self) -> None:
        pass

    async def _nack(self, delay: float | None) -> None:
        pass


_WAITING: set[asyncio.Task[None]] = set()
"""Delayed in-process redeliveries (kept referenced until they ran)."""


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


class Subscription(ABC):
    """A running consumer of one topic for one group."""

    topic: str
    group: str

    @abstractmethod
    async def stop(self, drain: bool = True) -> None:
        """Stop taking messages; with ``drain``, wait for handlers in flight to finish."""


class Broker(ABC):
    """The contract every adapter implements.

    ``options`` are the validated ``broker.options`` of the config for this broker type;
    ``namespace`` prefixes every name on the broker (empty by default).
    """

    features: ClassVar[Features]
    type: ClassVar[str]
    options_model: ClassVar[builtins.type[BrokerOptions]] = BrokerOptions
    """The model ``broker.options`` is validated with (into :attr:`settings`)."""
    binding: ClassVar[Binding | None] = None
    """The protocol binding the adapter writes in binary mode (``None``: no bytes, like memory)."""
    tls_supported: ClassVar[bool] = False
    """The adapter wires ``broker.tls`` (otherwise a ``tls`` setting is a ConfigError)."""
    auth_fields: ClassVar[frozenset[str]] = frozenset()
    """The ``broker.auth`` fields the adapter wires (any other one set is a ConfigError)."""
    subscribe_concurrency: ClassVar[int] = 64
    """How many :meth:`subscribe` calls ``App.start`` may have in flight at once: an app of many
    topics pays round trips, not their sum (RabbitMQ declares a queue, a binding and a consumer
    on a channel of its own; Redis and Kafka coalesce subscriptions that start together into
    one reader). An adapter that must subscribe in order sets 1."""

    history: Any = None
    """A :class:`~mesh.brokers.capabilities.HistoryReader` part when the broker keeps a log."""
    groups: Any = None
    """A :class:`~mesh.brokers.capabilities.GroupPublisher` part when it can deliver to one group."""

    def __init__(
        self,
        url: str | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        content_mode: str = "binary",
        namespace: str = "",
        client_id: str = "mesh",
        tls: TlsOptions | Mapping[str, Any] | None = None,
        auth: AuthOptions | Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.content_mode = content_mode
        self.namespace = namespace
        self.client_id = client_id
        self.settings: Any = validate_options(self.options_model, self.options)
        """The validated options (an instance of :attr:`options_model`)."""
        self.wire: Binding = (self.binding or GENERIC_BINDING).in_mode(content_mode)
        """The binding in the configured content mode (binary or structured)."""
        self.tls: TlsOptions | None = _model(TlsOptions, tls, "broker.tls")
        """``broker.tls``: the TLS settings (``None``: as the URL says)."""
        self.auth: AuthOptions | None = _model(AuthOptions, auth, "broker.auth")
        """``broker.auth``: the credentials (``None``: as the URL says)."""
        self._check_security()

    def _check_security(self) -> None:
        """Refuse ``tls``/``auth`` settings this adapter does not wire (never ignore them)."""
        problems: list[tuple[str, str]] = []
        if self.tls is not None and not self.tls_supported:
            problems.append(("broker.tls", f"the {self.type} broker does not take tls settings (yet)"))
        if self.auth is not None:
            takes = ", ".join(sorted(self.auth_fields)) or "none"
            for name in self.auth.given():
                if name not in self.auth_fields:
                    why = f"the {self.type} broker does not take it (it takes: {takes})"
                    problems.append((f"broker.auth.{name}", why))
        if problems:
            raise ConfigError(problems)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context of ``broker.tls`` (``None`` when not set); errors name the broker."""
        return None if self.tls is None else ssl_context(self.tls, self.type)

    def name_of(self, topic: str) -> str:
        """The broker-side name of a topic (the namespace prefix applied)."""
        return self.namespace + topic if self.namespace else topic

    @abstractmethod
    async def connect(self) -> None:
        """Connect within a bounded time or raise :class:`~mesh.errors.BrokerConnectionError`."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every subscription (draining in-flight handlers) and disconnect."""

    @abstractmethod
    async def publish(self, topic: str, event: Event) -> None:
        """Send one event; returns once the broker has taken it (or raises PublishError)."""

    async def publish_many(self, topic: str, events: Sequence[Event]) -> dict[int, Exception]:
        """Send many events to one topic, in order; returns the errors of those not taken, by index.

        Returns once the broker has taken (or refused) every event: an empty dict means all were
        taken. Events of one topic (one ``partitionkey`` on a partitioned broker) keep their order
        as for :meth:`publish`. Adapters override it to pipeline (one flush, one round trip of
        acknowledgements); this fallback awaits :meth:`publish` for each event in turn, so an
        out-of-tree broker works unchanged. Errors other than :class:`~mesh.errors.MeshError`
        (a bug, not a refusal) still propagate.
        """
        failed: dict[int, Exception] = {}
        for index, event in enumerate(events):
            try:
                await self.publish(topic, event)
            except MeshError as exc:
                failed[index] = exc
        return failed

    @abstractmethod
    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        """Start consuming ``topic`` as a member of ``group``; returns once consuming."""

    async def ensure_topic(self, topic: str) -> None:  # noqa: B027 - optional hook
        """Create the topic's broker-side objects if the broker needs them to exist first."""

    # -- optional capability: ephemeral destinations ----------------------------------------------

    async def subscribe_ephemeral(
        self,
        topic: str,
        handler: DeliveryHandler,
        *,
        group: str | None = None,
        exclusive: bool = False,
        concurrency: int = 1,
    ) -> Subscription:
        """Receive what :meth:`publish_ephemeral` sends to ``topic`` from now on; keep nothing.

        For the mesh's own short-lived traffic (replies, presence, invocation requests), under
        :data:`RESERVED_PREFIX`. Without ``group`` every ephemeral subscription of the topic gets
        every message (fan-out to every instance); with one, the subscriptions of that group
        share them (competing consumers). ``exclusive`` says the topic is this subscription's
        alone (a reply inbox): the broker removes the topic itself at stop. A message sent while
        nobody listens may be dropped, and nothing durable is left per subscriber.

        Deliveries are at most once where the broker allows it; ``ack`` must still be called.
        The fallback (``Features.ephemeral`` false) is an ordinary :meth:`subscribe`, with a
        group of its own per subscription when ``group`` is None: it works, but leaves that
        group behind on brokers that keep groups.
        """
        if group is None:
            group = f"{RESERVED_PREFIX}ephemeral.{self.client_id}.{os.urandom(4).hex()}"
        return await self.subscribe(topic, group, handler, concurrency=concurrency)

    async def publish_ephemeral(self, topic: str, event: Event) -> None:
        """Send to the ephemeral subscriptions of ``topic``; dropped if there are none.

        Never creates durable broker objects for ``topic`` (a reply to a caller that is gone
        must not bring its inbox back). The fallback is :meth:`publish`.
        """
        await self.publish(topic, event)

    async def publish_request(self, topic: str, event: Event) -> asyncio.Future[None] | None:
        """:meth:`publish_ephemeral` a request; where the broker reports "no responders" natively
        (``Features.native_request_reply``), also return a future that fails with
        :class:`~mesh.errors.NoResponders` as soon as the broker says nobody listens on ``topic``.

        The caller cancels the future once it has its reply. The fallback returns ``None``.
        """
        await self.publish_ephemeral(topic, event)
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={mask_url(self.url)!r})"


PUBLISH_WINDOW = 1000
"""Events of one ``publish_many`` awaiting their acknowledgement at once (:func:`publish_windowed`)."""


async def publish_windowed(
    publish: Callable[[str, Event], Awaitable[None]], topic: str, events: Sequence[Event], window: int = PUBLISH_WINDOW
) -> dict[int, Exception]:
    """``publish_many`` for an adapter whose ``publish`` awaits a per-event acknowledgement
    (publisher confirms, a stream's ack): the first event alone (it may create the topic's
    broker objects), then the rest with up to ``window`` acknowledgements awaited at once.

    Each ``publish`` runs up to its first wait when its task starts, in input order, so the
    events go on the wire in order. Returns the :class:`~mesh.errors.MeshError` of each event
    not taken, by index; any other error propagates.
    """
    failed: dict[int, Exception] = {}
    if not events:
        return failed
    try:
        await publish(topic, events[0])
    except MeshError as exc:
        failed[0] = exc
    for start in range(1, len(events), window):
        chunk = events[start : start + window]
        outcomes = await asyncio.gather(*(publish(topic, event) for event in chunk), return_exceptions=True)
        failed.update(failures_of(outcomes, MeshError, start))
    return failed


def failures_of(outcomes: Sequence[object], kind: type[Exception] = Exception, start: int = 0) -> dict[int, Exception]:
    """The outcomes of ``gather(..., return_exceptions=True)`` that are ``kind`` errors, by index
    (counted from ``start``); any other exception propagates."""
    failed: dict[int, Exception] = {}
    for offset, outcome in enumerate(outcomes):
        if isinstance(outcome, kind):
            failed[start + offset] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
    return failed


def _model(model: type[M], value: M | Mapping[str, Any] | None, where: str) -> M | None:
    """``value`` validated as ``model`` (a ConfigError naming ``where`` otherwise)."""
    if value is None or isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        found = [(".".join([where, *(str(p) for p in err["loc"])]), err["msg"]) for err in exc.errors()]
        raise ConfigError(found) from None


def validate_options(model: type[BrokerOptions], options: Mapping[str, Any]) -> Any:
    """The options validated by ``model``, or one :class:`ConfigError` listing every problem."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = [("broker.options." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(problems) from None


class Mailbox(Generic[T]):
    """What an adapter's callback hands its consume loop: an unbounded FIFO for one reader.

    The part of :class:`asyncio.Queue` the adapters use, at a fraction of its cost per item
    (no getter/putter bookkeeping, no ``task_done`` accounting): ``put_nowait`` appends and wakes
    the one waiting reader, ``get`` returns at once while items are there.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        items = self._items
        while not items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return items.popleft()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items


class HandlerRunner:
    """Runs a subscription's handler with at most ``concurrency`` in flight, and drains.

    With ``concurrency == 1`` the handler is awaited inline (the fast, ordered path); above
    that each delivery gets a task and :meth:`submit` waits for a free slot, which gives the
    adapter's fetch loop back-pressure. A handler whose ``inline`` attribute is true (a batch
    route: it holds deliveries itself and makes :meth:`submit` wait while it is full) is awaited
    inline at any ``concurrency``, and its ``drain()`` is awaited by :meth:`drain`; the
    ``concurrency`` still sizes the adapter's prefetch.
    """

    __slots__ = ("_handler", "_inline", "_slots", "_tasks", "concurrency", "topic")

    def __init__(self, handler: DeliveryHandler, concurrency: int, topic: str) -> None:
        self._handler = handler
        self.concurrency = max(1, concurrency)
        self._inline = self.concurrency == 1 or getattr(handler, "inline", False) is True
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.topic = topic

    async def submit(self, delivery: Delivery) -> None:
        """Hand one delivery to the handler; returns when it may take the next one."""
        if self._inline:
            await self._run(delivery)
            return
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._run_slot(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_slot(self, delivery: Delivery) -> None:
        try:
            await self._run(delivery)
        finally:
            self._slots.release()

    async def _run(self, delivery: Delivery) -> None:
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:  # the dispatch never raises; this guards a bare handler
            log.exception("handler for %s raised; the delivery is given back", self.topic)
            if not delivery.done:
                await delivery.nack()

    async def drain(self) -> None:
        """Wait for every handler in flight."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if getattr(self._handler, "inline", False) is True:
            drain: Callable[[], Awaitable[None]] | None = getattr(self._handler, "drain", None)
            if drain is not None:
                await drain()
