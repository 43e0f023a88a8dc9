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
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from mesh.codecs.data import canonical, decode_data, encode_data, format_time, is_json, parse_time
from mesh.codecs.structured import CONTENT_TYPE, from_structured, to_structured
from mesh.errors import DecodeError
from mesh.event import READ_NAME, Event, new_id

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

TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""Extensions written as the plain W3C Trace Context headers (not prefixed), so any
OpenTelemetry-instrumented consumer finds them; read from either form."""


class WireMessage(NamedTuple):
    """One message as a broker carries it (a named tuple: cheap to make on the hot path)."""

    body: bytes
    headers: Mapping[str, str | bytes] = MappingProxyType({})
    key: str | None = None
    content_type: str | None = None


_VARIANTS: dict[tuple[str, tuple[str, ...], str], Binding] = {}


class Binding:
    """How one protocol names CloudEvents attributes in its headers (header names precomputed)."""

    __slots__ = (
        "_attr_of",
        "_names",
        "content_mode",
        "h_dataschema",
        "h_id",
        "h_source",
        "h_specversion",
        "h_subject",
        "h_time",
        "h_type",
        "read_prefixes",
        "write_prefix",
    )

    def __init__(self, write_prefix: str, read_prefixes: tuple[str, ...] = (), content_mode: str = "binary") -> None:
        self.write_prefix = write_prefix
        self.read_prefixes = read_prefixes
        self.content_mode = content_mode
        self._names: dict[str, str] = {}
        self._attr_of: dict[str, str] = {}  # header -> attribute ("" for a header that is not one)
        p = write_prefix
        self.h_specversion, self.h_id, self.h_source, self.h_type = (
            p + "specversion",
            p + "id",
            p + "source",
            p + "type",
        )
        self.h_time, self.h_subject, self.h_dataschema = p + "time", p + "subject", p + "dataschema"

    def in_mode(self, content_mode: str) -> Binding:
        """This binding writing in ``content_mode`` (``binary`` or ``structured``); itself if it already does."""
        if content_mode == self.content_mode:
            return self
        variant = _VARIANTS.get((self.write_prefix, self.read_prefixes, content_mode))
        if variant is None:
            variant = _VARIANTS[(self.write_prefix, self.read_prefixes, content_mode)] = Binding(
                self.write_prefix, self.read_prefixes, content_mode
            )
        return variant

    def header(self, name: str) -> str:
        """The header that carries attribute ``name``."""
        header = self._names.get(name)
        if header is None:
            header = name if name in TRACE_HEADERS else self.write_prefix + name
            self._names[name] = header
        return header

    def attribute_of(self, header: str) -> str:
        """The attribute a header carries under the written prefix, exact case; ``""`` if none."""
        attr = self._attr_of.get(header)
        if attr is None:
            prefix = self.write_prefix
            attr = header[len(prefix) :] if header.startswith(prefix) else ""
            if len(self._attr_of) < 1024:  # foreign producers' header names must not grow it forever
                self._attr_of[header] = attr
        return attr

    def prefixes(self) -> tuple[str, ...]:
        """Every prefix read, the written one first."""
        return (self.write_prefix, *self.read_prefixes)

    def __repr__(self) -> str:
        return f"Binding({self.write_prefix!r}, {self.read_prefixes!r}, {self.content_mode!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Binding):
            return NotImplemented
        return (self.write_prefix, self.read_prefixes, self.content_mode) == (
            other.write_prefix,
            other.read_prefixes,
            other.content_mode,
        )

    def __hash__(self) -> int:
        return hash((self.write_prefix, self.read_prefixes, self.content_mode))


def to_binary(event: Event, binding: Binding) -> WireMessage:
    """Attributes as prefixed headers of canonical strings, data as the body."""
    b = binding
    headers: dict[str, str | bytes] = {
        b.h_specversion: event.specversion,
        b.h_id: event.id,
        b.h_source: event.source,
        b.h_type: event.type,
    }
    if event.time is not None:
        headers[b.h_time] = format_time(event.time)
    if event.subject is not None:
        headers[b.h_subject] = event.subject
    if event.dataschema is not None:
        headers[b.h_dataschema] = event.dataschema
    names = b._names
    for name, value in event.extensions.items():
        header = names.get(name) or b.header(name)
        headers[header] = value if type(value) is str else canonical(value)
    return WireMessage(encode_data(event), headers, event.partitionkey, event.datacontenttype)


def to_structured_message(event: Event) -> WireMessage:
    """The whole event as one JSON body (``application/cloudevents+json``)."""
    return WireMessage(to_structured(event), {}, event.partitionkey, CONTENT_TYPE)


def encode(event: Event, binding: Binding) -> WireMessage:
    """The event in the binding's configured content mode."""
    if binding.content_mode == "structured":
        return to_structured_message(event)
    return to_binary(event, binding)


def _text(value: object, name: str) -> str:
    """A header value as text: bytes are UTF-8; AMQP's typed values get their canonical form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"header {name!r} is not UTF-8") from exc
    if isinstance(value, bool | int | datetime):
        return canonical(value)
    return str(value)


def _attributes(msg: WireMessage, binding: Binding) -> dict[str, str]:
    """The CloudEvents attributes among the headers, by the first prefix that has any."""
    table, attribute_of = binding._attr_of, binding.attribute_of
    attrs: dict[str, str] = {}
    try:
        for name, value in msg.headers.items():  # fast path: the written prefix, exact case
            attr = table.get(name)
            if attr is None:
                attr = attribute_of(name)
            if attr:
                if type(value) is str:
                    attrs[attr] = value
                elif type(value) is bytes:
                    attrs[attr] = value.decode()
                else:
                    attrs[attr] = _text(value, name)
    except UnicodeDecodeError:
        attrs = {}
        for name, value in msg.headers.items():  # again, to name the header that is not UTF-8
            if attribute_of(name):
                _text(value, name)
    if attrs:
        _trace_headers(msg, attrs)
        return attrs
    for prefix in (binding.write_prefix, *binding.read_prefixes):  # any case, every listed prefix
        low = prefix.lower()
        n = len(low)
        for name, value in msg.headers.items():
            lname = name.lower()
            if lname.startswith(low) and lname[n:] not in attrs:
                attrs[lname[n:]] = value if type(value) is str else _text(value, name)
        if attrs:
            break
    _trace_headers(msg, attrs)
    return attrs


def _trace_headers(msg: WireMessage, attrs: dict[str, str]) -> None:
    headers = msg.headers
    if "traceparent" in headers and "traceparent" not in attrs:
        attrs["traceparent"] = _text(headers["traceparent"], "traceparent")
        if "tracestate" in headers and "tracestate" not in attrs:
            attrs["tracestate"] = _text(headers["tracestate"], "tracestate")


def from_binary(msg: WireMessage, binding: Binding) -> Event:
    """An event from prefixed headers and a body; raises :class:`DecodeError` when unreadable."""
    attrs = _attributes(msg, binding)
    specversion = attrs.pop("specversion", None)
    if specversion != "1.0":
        raise DecodeError(f"unsupported or missing specversion {specversion!r}")
    ev_id = attrs.pop("id", None)
    source = attrs.pop("source", None)
    ev_type = attrs.pop("type", None)
    if not ev_id or not source or not ev_type:
        missing = [k for k, v in (("id", ev_id), ("source", source), ("type", ev_type)) if not v]
        raise DecodeError(f"missing required attribute(s): {', '.join(missing)}")
    time = attrs.pop("time", None)
    declared = attrs.pop("datacontenttype", None)  # the transport's content-type slot wins
    subject = attrs.pop("subject", None)
    dataschema = attrs.pop("dataschema", None)
    for name in attrs:
        if name not in _READ_NAMES:
            if not READ_NAME.match(name):
                raise DecodeError(f"invalid attribute name {name!r}")
            if len(_READ_NAMES) < 1024:
                _READ_NAMES.add(name)
    content_type = msg.content_type or declared
    return Event._trusted(
        type=ev_type,
        source=source,
        id=ev_id,
        data=decode_data(msg.body, content_type),
        subject=subject,
        time=parse_time(time) if time else None,
        datacontenttype=content_type,
        dataschema=dataschema,
        extensions=attrs,  # type: ignore[arg-type]
    )


_READ_NAMES: set[str] = set()
"""Extension names already checked against the spec's rule (bounded)."""


@lru_cache(maxsize=256)
def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_cloudevent(msg: WireMessage, binding: Binding) -> bool:
    """Whether the message claims to be a CloudEvent in either content mode."""
    ct = _base_type(msg.content_type)
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


def decode(msg: WireMessage, binding: Binding, topic: str = "", fallback_id: str | None = None) -> Event:
    """Read any form: structured, binary with any listed prefix, or a legacy message (wrapped).

    Raises :class:`DecodeError`, with the raw bytes and headers attached, for a message that
    claims to be a CloudEvent and is not a valid one, or whose data does not match its type.
    """
    try:
        if binding.h_specversion in msg.headers:  # the common case first
            return from_binary(msg, binding)
        ct = _base_type(msg.content_type)
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
    except Exception as exc:
        raise DecodeError(f"unreadable message: {type(exc).__name__}: {exc}", bytes(msg.body)) from exc


def binary_is_json(msg: WireMessage) -> bool:
    """Whether the body is JSON by its content type."""
    return is_json(msg.content_type)
