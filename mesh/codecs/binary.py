"""Binary content mode and the liberal reader shared by every protocol binding.

A :class:`WireMessage` is what a broker carries: body bytes, string headers, a key and the
content type (each adapter puts it in its transport's slot). A :class:`Binding` names the header
prefix a protocol writes and the ones it reads; the per-broker modules beside this one are
instances of it. Everything here is pure: no broker client is imported.

>>> from mesh.event import Event
>>> KAFKA = Binding(write_prefix="ce_")
>>> msg = to_binary(Event(type="t", source="/s", id="1", data={"a": 1}), KAFKA)
>>> msg.headers["ce_type"], msg.content_type
('t', 'application/json')
>>> decode(msg, KAFKA).data
{'a': 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mesh.codecs.data import canonical, decode_data, encode_data, format_time, is_json, parse_time
from mesh.codecs.structured import CONTENT_TYPE, from_structured, to_structured
from mesh.errors import DecodeError
from mesh.event import READ_NAME, Event, ExtensionValue

__all__ = [
    "LEGACY_TYPE",
    "Binding",
    "WireMessage",
    "decode",
    "encode",
    "from_binary",
    "is_cloudevent",
    "to_binary",
    "to_structured_message",
    "wrap_legacy",
]

LEGACY_TYPE = "mesh.legacy.message"
"""The type of the event the mesh wraps around a message that was not a CloudEvent."""

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One message as a broker carries it."""

    body: bytes
    headers: Mapping[str, str | bytes] = field(default_factory=dict)
    key: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """How one protocol names CloudEvents attributes in its headers."""

    write_prefix: str
    read_prefixes: tuple[str, ...] = ()
    content_mode: str = "binary"

    def prefixes(self) -> tuple[str, ...]:
        """Every prefix read, the written one first."""
        return (self.write_prefix, *self.read_prefixes)


def to_binary(event: Event, binding: Binding) -> WireMessage:
    """Attributes as prefixed headers of canonical strings, data as the body."""
    p = binding.write_prefix
    headers: dict[str, str | bytes] = {
        p + "specversion": event.specversion,
        p + "id": event.id,
        p + "source": event.source,
        p + "type": event.type,
    }
    if event.time is not None:
        headers[p + "time"] = format_time(event.time)
    if event.subject is not None:
        headers[p + "subject"] = event.subject
    if event.dataschema is not None:
        headers[p + "dataschema"] = event.dataschema
    for name, value in event.extensions.items():
        headers[p + name] = value if type(value) is str else canonical(value)
    return WireMessage(encode_data(event), headers, event.partitionkey, event.datacontenttype)


def to_structured_message(event: Event) -> WireMessage:
    """The whole event as one JSON body (``application/cloudevents+json``)."""
    return WireMessage(to_structured(event), {}, event.partitionkey, CONTENT_TYPE)


def encode(event: Event, binding: Binding) -> WireMessage:
    """The event in the binding's configured content mode."""
    if binding.content_mode == "structured":
        return to_structured_message(event)
    return to_binary(event, binding)


def _text(value: str | bytes, name: str) -> str:
    if type(value) is str:
        return value
    try:
        return bytes(value).decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"header {name!r} is not UTF-8") from exc


def from_binary(msg: WireMessage, binding: Binding) -> Event:
    """An event from prefixed headers and a body; raises :class:`DecodeError` when unreadable."""
    attrs: dict[str, str] = {}
    for prefix in binding.prefixes():
        n = len(prefix)
        for raw_name, value in msg.headers.items():
            name = raw_name.lower()
            if name.startswith(prefix.lower()):
                attr = name[n:]
                if attr and attr not in attrs:
                    attrs[attr] = _text(value, raw_name)
        if attrs:
            break
    specversion = attrs.pop("specversion", None)
    if specversion != "1.0":
        raise DecodeError(f"unsupported or missing specversion {specversion!r}")
    missing = [name for name in ("id", "source", "type") if not attrs.get(name)]
    if missing:
        raise DecodeError(f"missing required attribute(s): {', '.join(missing)}")
    time = attrs.pop("time", None)
    attrs.pop("datacontenttype", None)  # the transport's content-type slot wins
    content_type = msg.content_type
    ev_id = attrs.pop("id")
    source = attrs.pop("source")
    ev_type = attrs.pop("type")
    subject = attrs.pop("subject", None)
    dataschema = attrs.pop("dataschema", None)
    extensions: dict[str, ExtensionValue] = {}
    for name, value in attrs.items():
        if not READ_NAME.match(name):
            raise DecodeError(f"invalid attribute name {name!r}")
        extensions[name] = value
    return Event._trusted(
        type=ev_type,
        source=source,
        id=ev_id,
        data=decode_data(msg.body, content_type),
        subject=subject,
        time=parse_time(time) if time else None,
        datacontenttype=content_type,
        dataschema=dataschema,
        extensions=extensions,
    )


def is_cloudevent(msg: WireMessage, binding: Binding) -> bool:
    """Whether the message claims to be a CloudEvent in either content mode."""
    ct = (msg.content_type or "").split(";", 1)[0].strip().lower()
    if ct in (CONTENT_TYPE, BATCH_CONTENT_TYPE):
        return True
    names = {n.lower() for n in msg.headers}
    return any(p.lower() + "specversion" in names for p in binding.prefixes())


def wrap_legacy(msg: WireMessage, topic: str, fallback_id: str | None = None) -> Event:
    """A CloudEvent around a message that is not one (type :data:`LEGACY_TYPE`)."""
    content_type = msg.content_type
    body = msg.body
    data: Any
    if content_type is None:
        try:
            data = orjson.loads(body) if body else None
            content_type = "application/json" if body else None
        except orjson.JSONDecodeError:
            data = bytes(body)
            content_type = "application/octet-stream"
    else:
        data = decode_data(body, content_type)
    from mesh.event import new_id

    return Event._trusted(
        type=LEGACY_TYPE,
        source=f"/mesh/legacy/{topic}",
        id=fallback_id or new_id(),
        data=data,
        subject=msg.key,
        time=None,
        datacontenttype=content_type,
        dataschema=None,
        extensions={},
    )


def decode(
    msg: WireMessage, binding: Binding, topic: str = "", fallback_id: str | None = None
) -> Event:
    """Read any form: structured, binary with any listed prefix, or a legacy message (wrapped).

    Raises :class:`DecodeError`, with the raw bytes and headers attached, for a message that
    claims to be a CloudEvent and is not a valid one, or whose data does not match its type.
    """
    try:
        ct = (msg.content_type or "").split(";", 1)[0].strip().lower()
        if ct == CONTENT_TYPE:
            return from_structured(msg.body)
        if ct == BATCH_CONTENT_TYPE:
            raise DecodeError("batched CloudEvents are not supported on a subscription")
        names = {n.lower() for n in msg.headers}
        if any(p.lower() + "specversion" in names for p in binding.prefixes()):
            return from_binary(msg, binding)
        if ct == "" and msg.body[:1] == b"{" and b'"specversion"' in msg.body:
            try:
                return from_structured(msg.body)
            except DecodeError:
                pass
        return wrap_legacy(msg, topic, fallback_id)
    except DecodeError as exc:
        exc.raw = bytes(msg.body)
        exc.headers = {k: v if isinstance(v, str) else v.decode("utf-8", "replace") for k, v in msg.headers.items()}
        raise
    except Exception as exc:  # noqa: BLE001 - anything odd in foreign input is a decode error
        raise DecodeError(f"unreadable message: {type(exc).__name__}: {exc}", bytes(msg.body)) from exc


def binary_is_json(msg: WireMessage) -> bool:
    """Whether the body is JSON by its content type."""
    return is_json(msg.content_type)
