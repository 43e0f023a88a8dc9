"""FastStream services on the mesh: a middleware that speaks the mesh's CloudEvents binding.

``MeshMiddleware(source=...)`` goes in a FastStream broker's ``middlewares=[...]``; the binding
follows the broker (Kafka ``ce_`` headers, RabbitMQ and NATS ``ce-`` headers, Redis ``ce_``
fields, see :mod:`mesh.codecs.bindings`).

===========================  =================================================================
direction                    what the middleware does
===========================  =================================================================
mesh -> FastStream handler   decodes the delivery into an :class:`~mesh.Event` (any form the
                             mesh reads: binary, structured, legacy), gives it to a parameter
                             annotated ``MeshEvent``, leaves the data as the message body (so
                             ``order: Order`` is validated by FastStream) and makes the
                             event's ``traceparent`` the current OpenTelemetry context
FastStream -> mesh           a publish whose headers come from ``MeshEvent.headers(type=...)``
                             gets the CloudEvents attributes in the broker's binding, a new
                             ``id``, ``time``, the middleware's ``source`` and the current
                             trace context; the body (FastStream's encoding) is the data
handler raises               with ``dead_letter=True``: the event, plus the mesh's failure
                             extensions (``mesherrortype`` ... ``meshlastfail``), is written to
                             ``<topic>.dlq`` first and the delivery acknowledged after; if the
                             write fails, the handler's error goes on to FastStream
===========================  =================================================================

Redis: FastStream's producer writes every stream entry as one ``__data__`` field holding its
own envelope, which no middleware can change. So the middleware reads mesh entries (``ce_*``
fields) by handing FastStream its envelope, and writes mesh entries (and dead letters) itself
through the broker's Redis client: call :meth:`MeshMiddleware.bind` with the broker. Dead
letters need :meth:`MeshMiddleware.bind` on every broker, as the middleware publishes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from pydantic import BaseModel

from mesh import extensions as ext
from mesh.codecs.binary import Binding, WireMessage, decode, encode, to_binary
from mesh.codecs.bindings import AMQP, KAFKA, NATS, REDIS
from mesh.codecs.data import canonical
from mesh.codecs.structured import CONTENT_TYPE
from mesh.errors import MeshError
from mesh.event import Event, ExtensionValue, now
from mesh.integrations import require

require("faststream", "faststream")

from faststream import BaseMiddleware, Context  # noqa: E402 - after the one-line message for a missing extra
from faststream.message import encode_message  # noqa: E402

from mesh.codecs.redis import from_fields, to_fields  # noqa: E402

if TYPE_CHECKING:
    from faststream._internal.basic_types import AsyncFuncAny
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage

__all__ = ["EVENT_KEY", "MARK", "MeshEvent", "MeshEventType", "MeshMiddleware", "binding_of", "dead_letter_event"]

MARK = "_mesh.ce."
"""Prefix of the headers :meth:`MeshEventType.headers` writes; the middleware turns them into the binding's."""

EVENT_KEY = "mesh_event"
"""The FastStream context key holding the delivered event (what ``MeshEvent`` reads)."""

_MODULES: tuple[tuple[str, Binding], ...] = (
    ("faststream.kafka", KAFKA),
    ("faststream.confluent", KAFKA),
    ("faststream.rabbit", AMQP),
    ("faststream.nats", NATS),
    ("faststream.redis", REDIS),
)
_DATA_KEY = b"__data__"


class MeshEventType(Event):
    """The type of a ``MeshEvent`` parameter: an :class:`~mesh.Event`, plus the header helper."""

    __slots__ = ()

    @staticmethod
    def headers(
        type: str, source: str | None = None, subject: str | None = None, **extensions: ExtensionValue
    ) -> dict[str, str]:
        """Headers for a FastStream ``publish`` that the middleware sends as a mesh CloudEvent."""
        Event(type, source or "/faststream", subject=subject, extensions=dict(extensions))  # checks names now
        marks = {MARK + "type": type}
        if source is not None:
            marks[MARK + "source"] = source
        if subject is not None:
            marks[MARK + "subject"] = subject
        for name, value in extensions.items():
            marks[MARK + name] = value if isinstance(value, str) else canonical(value)
        return marks


MeshEvent = Annotated[MeshEventType, Context(EVENT_KEY)]
"""A handler parameter ``event: MeshEvent`` receives the delivery as a mesh CloudEvent."""


def binding_of(obj: object) -> Binding | None:
    """The mesh binding of a FastStream message or publish command, by its broker package."""
    module = type(obj).__module__
    for prefix, binding in _MODULES:
        if module.startswith(prefix):
            return binding
    return None


def dead_letter_event(event: Event, error: BaseException, topic: str, group: str, attempts: int = 1) -> Event:
    """The dead letter of ``event``: the same event plus the mesh's failure extensions."""
    failed = now()
    failure: dict[str, ExtensionValue] = {
        ext.ERROR_TYPE: type(error).__name__,
        ext.ERROR: str(error)[:1000],
        ext.TOPIC: topic,
        ext.GROUP: group,
        ext.ATTEMPTS: attempts,
        ext.FIRST_FAIL: failed,
        ext.LAST_FAIL: failed,
    }
    return event.with_extensions(**failure)


class MeshMiddleware:
    """A FastStream broker middleware: mesh CloudEvents in and out (see the module docstring)."""

    def __init__(
        self,
        source: str,
        *,
        group: str | None = None,
        dead_letter: bool = False,
        dead_letter_topic: str | None = None,
        binding: Binding | None = None,
    ) -> None:
        self.source = source
        self.group = group or source.strip("/") or "faststream"
        self.dead_letter = dead_letter
        self.dead_letter_topic = dead_letter_topic
        self.binding = binding
        self.broker: Any = None

    def bind(self, broker: Any) -> Any:
        """Publish dead letters and Redis entries through ``broker``; returns it."""
        self.broker = broker
        return broker

    def dead_letter_target(self, topic: str) -> str:
        """Where a failed event of ``topic`` goes (``<topic>.dlq`` by default)."""
        return self.dead_letter_topic or f"{topic}.dlq"

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _MeshScope:
        return _MeshScope(msg, context=context, options=self)


class _MeshScope(BaseMiddleware):
    """One delivery's or one publish's pass through :class:`MeshMiddleware`."""

    def __init__(self, msg: Any, /, *, context: ContextRepo, options: MeshMiddleware) -> None:
        super().__init__(msg, context=context)
        self.options = options

    async def on_receive(self) -> None:
        """A mesh entry on a Redis stream becomes FastStream's envelope, so its parser reads it."""
        raw = self.msg
        if not isinstance(raw, dict) or raw.get("type") != "stream" or not isinstance(raw.get("data"), dict):
            return
        fields = raw["data"]
        if _DATA_KEY in fields:
            return
        from faststream.redis.parser import BinaryMessageFormatV1

        wire = from_fields(fields)
        headers = {name: v.decode() if isinstance(v, bytes) else str(v) for name, v in wire.headers.items()}
        if wire.content_type:
            headers["content-type"] = wire.content_type
        envelope = await BinaryMessageFormatV1.encode(
            message=wire.body, reply_to=None, headers=headers, correlation_id=headers.get("ce_id", "")
        )
        raw["data"] = {_DATA_KEY: envelope}

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        """Decode the delivery into a mesh event, run the handler with it, dead-letter a failure."""
        binding = self.options.binding or binding_of(msg)
        if binding is None or msg.batch_headers:
            return await call_next(msg)
        topic = _topic_of(msg)
        body = msg.body if isinstance(msg.body, bytes) else bytes(msg.body)
        wire = WireMessage(body, msg.headers, None, msg.content_type or None)
        event = decode(wire, binding, topic, msg.message_id)
        if (msg.content_type or "").split(";")[0].strip().lower() == CONTENT_TYPE:  # structured: body = data
            data = to_binary(event, binding)
            msg.body, msg.content_type = data.body, data.content_type
            msg.clear_cache()
        token = otel_context.attach(propagate.extract(event.extensions)) if "traceparent" in event.extensions else None
        try:
            with self.context.scope(EVENT_KEY, event):
                return await call_next(msg)
        except Exception as exc:
            if not self.options.dead_letter:
                raise
            letter = dead_letter_event(event, exc, topic, self.options.group)
            await _send(self.options, self.options.dead_letter_target(topic), encode(letter, binding))
            return None
        finally:
            if token is not None:
                otel_context.detach(token)

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        """A publish marked by ``MeshEvent.headers`` goes out as a CloudEvent in the broker's binding."""
        headers: dict[str, Any] = cmd.headers
        marks = {k[len(MARK) :]: str(v) for k, v in headers.items() if k.startswith(MARK)}
        if not marks:
            return await call_next(cmd)
        binding = self.options.binding or binding_of(cmd)
        if binding is None:
            raise MeshError(f"MeshMiddleware does not know the binding of {type(cmd).__name__}: pass binding=")
        for name in marks:
            del headers[MARK + name]
        ev_type, subject = marks.pop("type"), marks.pop("subject", None)
        source = marks.pop("source", self.options.source)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        event = Event(ev_type, source, subject=subject, extensions={**carrier, **marks})
        attributes = to_binary(event, binding).headers
        if binding is REDIS and str(getattr(cmd, "destination_type", "")) in ("stream", "DestinationType.Stream"):
            body, content_type = _encode_body(cmd.body)
            return await _xadd(self.options, cmd.destination, WireMessage(body, attributes, None, content_type))
        headers.update(attributes)
        return await call_next(cmd)


def _encode_body(body: Any) -> tuple[bytes, str | None]:
    """A publish body as FastStream encodes it (pydantic models as JSON)."""
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode(), "application/json"
    return encode_message(body, None)


def _topic_of(msg: StreamMessage[Any]) -> str:
    """The topic (Kafka topic, RabbitMQ exchange, NATS subject, Redis stream) a delivery came from."""
    raw = msg.raw_message
    if isinstance(raw, dict):
        channel = raw.get("channel", "")
        return channel.decode() if isinstance(channel, bytes) else str(channel)
    for attr in ("topic", "exchange", "subject"):
        value = getattr(raw, attr, None)
        if value:
            return str(value)
    return str(getattr(raw, "routing_key", "") or "")


async def _send(options: MeshMiddleware, topic: str, wire: WireMessage) -> None:
    """Publish a wire message on ``topic`` through the bound FastStream broker, in the mesh's layout."""
    broker = options.broker
    if broker is None:
        raise MeshError("MeshMiddleware(dead_letter=True) needs the broker: call middleware.bind(broker)")
    module = type(broker).__module__
    headers = dict(wire.headers)
    if module.startswith("faststream.redis"):
        await _xadd(options, topic, wire)
    elif module.startswith("faststream.rabbit"):
        from faststream.rabbit import ExchangeType, RabbitExchange

        exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
        await broker.publish(
            wire.body, exchange=exchange, routing_key=wire.key or topic, headers=headers, content_type=wire.content_type
        )
    else:  # Kafka and NATS: the content type is the content-type header
        if wire.content_type:
            headers["content-type"] = wire.content_type
        if module.startswith(("faststream.kafka", "faststream.confluent")):
            await broker.publish(wire.body, topic, headers=headers, key=wire.key.encode() if wire.key else None)
        else:
            await broker.publish(wire.body, topic, headers=headers)


async def _xadd(options: MeshMiddleware, stream: str, wire: WireMessage) -> bytes:
    """Write a mesh entry (``ce_*`` fields) on a Redis stream through the bound broker's client."""
    broker = options.broker
    if broker is None:
        raise MeshError("MeshMiddleware on Redis writes entries itself: call middleware.bind(broker)")
    client = broker.config.broker_config.connection.client
    entry_id: bytes = await client.xadd(stream, dict(zip(*[iter(to_fields(wire))] * 2, strict=True)))
    return entry_id
