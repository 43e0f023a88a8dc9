"""MQTT bindings (aiomqtt, MQTT 5): ``mqtt-in`` subscribes to a filter, ``mqtt-out`` publishes.

What ``mqtt-in`` makes of a message, following the CloudEvents MQTT binding:

==========================================  ==============================================
message                                     event
==========================================  ==============================================
user property ``specversion`` (MQTT 5       binary mode: attributes from the user properties,
binary mode)                                ``datacontenttype`` from the Content Type property
Content Type ``application/cloudevents+     structured mode
json``, or a JSON object with
``specversion`` (MQTT 3.1.1 style)
anything else (JSON, text, random bytes)    wrapped: ``event_type`` with the MQTT topic as
                                            ``subject``; JSON as data, other bytes as
                                            ``application/octet-stream`` (never dropped)
a CloudEvent that does not decode           wrapped the same way (counted as ``wrapped``)
==========================================  ==============================================

A ``traceparent`` user property continues the trace. The client acknowledges a QoS 1/2
message when it arrives (aiomqtt has no manual ack), so a crash between arrival and the broker's
confirmation loses that message; a publish the broker refuses is tried again, in order, until the
binding stops. The connection is re-established after a loss (a fixed ``client_id`` keeps the
session, and the broker queues QoS 1 messages meanwhile).

``mqtt-out`` writes binary mode by default (attributes as user properties, MQTT 5), or
structured JSON, or the data alone (``cloudevents: none``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiomqtt
from opentelemetry.trace import SpanKind
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mesh.bindings.base import BindingError, BindingFeatures, InputBinding, OutputBinding, json_by_default, span
from mesh.bindings.http import HTTP
from mesh.bindings.options import MqttInOptions, MqttOutOptions
from mesh.codecs import CONTENT_TYPE, WireMessage, from_structured, to_binary, to_structured
from mesh.codecs.binary import from_binary
from mesh.codecs.data import json_dumps
from mesh.errors import DecodeError, InvalidEvent
from mesh.event import READ_NAME, Event

__all__ = ["MqttIn", "MqttOut", "from_mqtt", "to_mqtt"]

log = logging.getLogger("mesh.bindings")


def _client(url: str, client_id: str | None) -> aiomqtt.Client:
    parts = urlsplit(url)
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1",
        parts.port or 1883,
        identifier=client_id,
        username=parts.username,
        password=parts.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=10,
    )


def from_mqtt(payload: bytes, properties: Properties | None) -> Event | None:
    """The CloudEvent a message carries (binary or structured mode), or ``None`` if it carries none.

    Raises :class:`~mesh.errors.DecodeError` for one that claims to be a CloudEvent and is not.
    """
    user = dict(getattr(properties, "UserProperty", None) or [])
    content_type = getattr(properties, "ContentType", None)
    if "specversion" in user:
        trace = ("traceparent", "tracestate")
        headers = {f"ce-{k}": v for k, v in user.items() if READ_NAME.match(k) and k not in trace}
        for name in ("traceparent", "tracestate"):
            if name in user:
                headers[name] = user[name]
        return from_binary(WireMessage(payload, headers, None, content_type), HTTP)
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base == CONTENT_TYPE or (not base and payload[:1] == b"{" and b'"specversion"' in payload):
        return json_by_default(from_structured(payload))
    return None


def to_mqtt(event: Event, mode: str) -> tuple[bytes, Properties]:
    """Payload and MQTT 5 properties of an event in ``binary`` or ``structured`` mode."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if mode == "structured":
        properties.ContentType = CONTENT_TYPE
        return to_structured(event), properties
    msg = to_binary(event, HTTP)
    user = []
    for name, value in msg.headers.items():
        text = value if isinstance(value, str) else value.decode()
        user.append((name.removeprefix("ce-"), text))
    properties.UserProperty = user
    if msg.content_type:
        properties.ContentType = msg.content_type
    return msg.body, properties


class MqttIn(InputBinding[MqttInOptions]):
    """Subscribe to an MQTT topic filter; each message becomes an event (see the module docstring)."""

    type = "mqtt-in"
    features = BindingFeatures(
        direction="input",
        delivery="acked by the client on arrival; publish retried until confirmed; nothing dropped",
    )

    def __init__(self, name: str, options: MqttInOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._error: BaseException | None = None

    async def start(self) -> None:
        """Connect and subscribe; returns once subscribed (raises if the first connection fails)."""
        self._ready = asyncio.Event()
        self._error = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"binding {self.name}")
        waiter = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait([waiter, self._task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self._ready.is_set():
            error = self._error
            raise BindingError(f"mqtt-in {self.name!r}: cannot subscribe at {self.options.url}: {error}") from error

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with _client(self.options.url, self.options.client_id) as client:
                    await client.subscribe(self.options.filter, qos=self.options.qos)
                    self.state = "running"
                    delay = 0.2
                    assert self._ready is not None
                    self._ready.set()
                    async for message in client.messages:
                        await self._on_message(message)
            except aiomqtt.MqttError as exc:
                assert self._ready is not None
                if not self._ready.is_set():
                    self._error = exc
                    return
                self.state = f"reconnecting: {exc}"
                log.warning("mqtt-in %s lost its connection (%s); reconnecting", self.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        self.stats.add("received")
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        properties = message.properties
        user = dict(getattr(properties, "UserProperty", None) or [])
        carrier = {k: v for k, v in user.items() if k in ("traceparent", "tracestate")}
        topic = message.topic.value
        try:
            event = from_mqtt(payload, properties)
        except (DecodeError, InvalidEvent) as exc:
            log.info("mqtt-in %s: a message on %s is no valid CloudEvent (%s); wrapped", self.name, topic, exc)
            event = None
        if event is None:
            event = self._wrap(payload, getattr(properties, "ContentType", None), topic)
        attributes = {"messaging.system": "mqtt", "messaging.destination.name": topic, "mesh.binding.name": self.name}
        delay = 0.1
        while True:
            with span(f"process {topic}", SpanKind.CONSUMER, attributes, carrier):
                try:
                    await self.emit(event)
                    return
                except Exception as exc:
                    log.warning("mqtt-in %s: publish failed (%s); trying again", self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _wrap(self, payload: bytes, content_type: str | None, topic: str) -> Event:
        self.stats.add("wrapped")
        try:
            msg = WireMessage(payload, {}, None, content_type)
            from mesh.codecs import wrap_legacy

            legacy = wrap_legacy(msg, self.topic)
            data, ct = legacy.data, legacy.datacontenttype
        except DecodeError:
            data, ct = payload, "application/octet-stream"
        return self.wrap(data, subject=topic, datacontenttype=ct)

    def event_type(self, subject: str | None = None) -> str:
        """``event_type`` with ``{subject}`` as the MQTT topic in dots (``plant.7.temp``)."""
        return super().event_type(subject.replace("/", ".") if subject else subject)

    async def stop(self) -> None:
        """Disconnect."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class MqttOut(OutputBinding[MqttOutOptions]):
    """Publish to MQTT; ``publish`` (or ``create``) with data, or ``from_topic`` events as they are."""

    type = "mqtt-out"
    features = BindingFeatures(
        direction="output",
        operations=frozenset({"publish", "create"}),
        delivery="returns once the MQTT broker acknowledged (QoS 1/2); errors raise",
    )
    default_operation: ClassVar[str] = "publish"
    span_kind: ClassVar[SpanKind] = SpanKind.PRODUCER

    def __init__(self, name: str, options: MqttOutOptions, runtime: Any) -> None:
        super().__init__(name, options, runtime)
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiomqtt.Client:
        async with self._lock:
            if self._client is None:
                client = _client(self.options.url, None)
                try:
                    await client.__aenter__()
                except aiomqtt.MqttError as exc:
                    raise BindingError(f"mqtt-out {self.name!r}: cannot connect to {self.options.url}: {exc}") from exc
                self._client = client
            return self._client

    async def start(self) -> None:
        """Connect."""
        await self._connected()

    async def close(self) -> None:
        """Disconnect."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        """Publish ``data`` (in a CloudEvent unless ``cloudevents: none``); ``metadata``: topic, qos, retain, type."""
        topic = metadata.get("topic") or self.options.topic
        if not topic:
            raise BindingError(f"mqtt-out {self.name!r}: no MQTT topic (set 'topic' or metadata['topic'])")
        event = metadata.get("event")
        properties: Properties | None = None
        if self.options.cloudevents == "none":
            payload = data if isinstance(data, bytes) else data.encode() if isinstance(data, str) else json_dumps(data)
        else:
            if not isinstance(event, Event):
                event_type = metadata.get("type") or self.options.event_type or f"binding.{self.name}"
                event = Event(event_type, f"{self.runtime.source}/bindings/{self.name}", data)
            payload, properties = to_mqtt(event, self.options.cloudevents)
        client = await self._connected()
        try:
            await client.publish(
                topic,
                payload,
                qos=int(metadata.get("qos", self.options.qos)),
                retain=bool(metadata.get("retain", self.options.retain)),
                properties=properties,
            )
        except aiomqtt.MqttError as exc:
            await self.close()  # the next call connects again
            raise BindingError(f"mqtt-out {self.name!r}: publish to {topic!r} failed: {exc}") from exc
        return {"topic": topic, "id": event.id if isinstance(event, Event) else None}
