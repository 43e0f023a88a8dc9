"""Binary content mode and the liberal reader shared by every protocol binding.

A :class:`WireMessage` is what a broker carries: body bytes, string headers, a key and the
content type (each adapter puts it in its transport's slot). A :class:`Binding` names the header
prefix a protocol writes and the ones it reads; the per-broker modules beside this one are
instances of it. Everything here is pure: no broker client is imported.

Every public reader returns an :class:`~mesh.event.Event` or raises
:class:`~mesh.errors.DecodeError`, for any input, and what it returns can be encoded again in
either content mode (the dead-letter step re-encodes it). What the reader does with odd input:

=====================================  ===================================================
input                                  read as
=====================================  ===================================================
header value ``None`` (Kafka)          absent (never the text ``"None"``)
``bytes`` value                        UTF-8 text; not UTF-8: ``DecodeError``
``bool`` / ``int`` / ``datetime``      canonical string (``true``, ``42``, RFC 3339; naive = UTC)
any other value type (list, float...)  ``DecodeError`` naming the header (only for attributes)
header name that is not ``str``        not an attribute (ignored)
prefix or name in any case             read (``ce_Type`` is ``type``); the last one wins
``ce_data`` / ``ce-data``              ``DecodeError``: ``data`` is no extension name
extension name not ``[a-z0-9]+``       ``DecodeError``
content type ``bytes``                 UTF-8 text; any other non-``str`` type: ``DecodeError``
JSON data: integer beyond 64 bits      ``DecodeError`` (orjson would make it a float, and
                                       refuses to write it back)
JSON nested 254+ levels                ``DecodeError`` (cannot be written back)
anything else unexpected               ``DecodeError("unreadable message: ...")``, never
                                       another exception
=====================================  ===================================================

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
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from mesh.codecs.data import (
    canonical,
    content_type_text,
    decode_data,
    encode_data,
    format_time,
    parse_time,
    shown_headers,
    unreadable,
)
from mesh.codecs.structured import CONTENT_TYPE, from_structured, to_structured
from mesh.errors import DecodeError
from mesh.event import READ_NAME, RESERVED, Event, new_id

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
        """The attribute a header carries under the written prefix, in any case; ``""`` if none."""
        attr = self._attr_of.get(header)
        if attr is None:
            prefix = self.write_prefix
            if type(header) is not str:  # a broker client may hand over bytes or worse: not ours
                return ""
            low = header.lower()  # any case: cached per header name, so the hot path never pays
            attr = low[len(prefix) :] if low.startswith(prefix.lower()) else ""
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


def _text(value: object, name: object) -> str | None:
    """A header value as text (see the table above); ``None`` for a value that is absent."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"header {name!r} is not UTF-8") from exc
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if isinstance(value, bool | int):
        return canonical(value)
    raise DecodeError(f"header {name!r} holds a {type(value).__name__}, which is no attribute value")


def _attributes(msg: WireMessage, binding: Binding) -> dict[str, str]:
    """The CloudEvents attributes among the headers, by the written prefix (exact case) or else
    by the first listed prefix that has any (any case)."""
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
                    text = _text(value, name)
                    if text is not None:
                        attrs[attr] = text
    except UnicodeDecodeError:
        for name, value in msg.headers.items():  # again, to name the header that is not UTF-8
            if attribute_of(name):
                _text(value, name)
    if attrs:
        if "traceparent" in msg.headers:
            _trace_headers(msg, attrs)
        return attrs
    return _attributes_any_case(msg, binding)


def _attributes_any_case(msg: WireMessage, binding: Binding) -> dict[str, str]:
    """The attributes by the first listed prefix that has any, prefix and name in any case."""
    attrs: dict[str, str] = {}
    for prefix in (binding.write_prefix, *binding.read_prefixes):
        low = prefix.lower()
        n = len(low)
        for name, value in msg.headers.items():
            if type(name) is not str:
                continue
            lname = name.lower()
            if lname.startswith(low) and lname[n:] not in attrs:
                text = _text(value, name)
                if text is not None:
                    attrs[lname[n:]] = text
        if attrs:
            break
    _trace_headers(msg, attrs)
    return attrs


def _trace_headers(msg: WireMessage, attrs: dict[str, str]) -> None:
    headers = msg.headers
    if "traceparent" in headers and "traceparent" not in attrs:
        parent = _text(headers["traceparent"], "traceparent")
        if parent is None:
            return
        attrs["traceparent"] = parent
        if "tracestate" in headers and "tracestate" not in attrs:
            state = _text(headers["tracestate"], "tracestate")
            if state is not None:
                attrs["tracestate"] = state


def from_binary(msg: WireMessage, binding: Binding) -> Event:
    """An event from prefixed headers and a body; raises :class:`DecodeError` when unreadable."""
    try:
        attrs = _attributes(msg, binding)
        specversion = attrs.pop("specversion", None)
        ev_id = attrs.pop("id", None)
        source = attrs.pop("source", None)
        ev_type = attrs.pop("type", None)
        if specversion != "1.0" or not ev_id or not source or not ev_type:
            # Some headers in another case or prefix than the written one: read them all that way.
            attrs = _attributes_any_case(msg, binding)
            specversion = attrs.pop("specversion", None)
            if specversion != "1.0":
                raise DecodeError(f"unsupported or missing specversion {specversion!r}")
            ev_id, source, ev_type = attrs.pop("id", None), attrs.pop("source", None), attrs.pop("type", None)
            if not ev_id or not source or not ev_type:
                missing = [k for k, v in (("id", ev_id), ("source", source), ("type", ev_type)) if not v]
                raise DecodeError(f"missing required attribute(s): {', '.join(missing)}")
        time = attrs.pop("time", None)
        declared = attrs.pop("datacontenttype", None)  # the transport's content-type slot wins
        subject = attrs.pop("subject", None)
        dataschema = attrs.pop("dataschema", None)
        for name in attrs:
            if name not in _READ_NAMES:
                if not READ_NAME.match(name) or name in RESERVED:
                    raise DecodeError(f"invalid extension name {name!r}")
                if len(_READ_NAMES) < 1024:
                    _READ_NAMES.add(name)
        content_type = msg.content_type or declared
        if type(content_type) is not str and content_type is not None:
            content_type = content_type_text(content_type)
        when = None
        if time:
            try:
                when = datetime.fromisoformat(time)  # parse_time inlined (the hot path); it explains errors
            except ValueError:
                when = parse_time(time)
            if when.tzinfo is None:
                when = parse_time(time)
        return Event._trusted(  # positional: the hot path
            ev_type,
            source,
            ev_id,
            decode_data(msg.body, content_type),
            subject,
            when,
            content_type,
            dataschema,
            attrs,  # type: ignore[arg-type]
        )
    except DecodeError:
        raise
    except Exception as exc:  # a safety net: the cases above are meant to leave nothing here
        raise unreadable(exc, msg.body, msg.headers) from exc


_READ_NAMES: set[str] = set()
"""Extension names already checked against the spec's rule (bounded)."""


@lru_cache(maxsize=256)
def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_cloudevent(msg: WireMessage, binding: Binding) -> bool:
    """Whether the message claims to be a CloudEvent in either content mode."""
    content_type = msg.content_type
    if isinstance(content_type, str) and _base_type(content_type) in (CONTENT_TYPE, BATCH_CONTENT_TYPE):
        return True
    return _claims_binary(msg, binding)


def _claims_binary(msg: WireMessage, binding: Binding) -> bool:
    """Whether a ``specversion`` header is there under any listed prefix, in any case."""
    names = {n.lower() for n in msg.headers if type(n) is str}
    return any(p.lower() + "specversion" in names for p in binding.prefixes())


def wrap_legacy(msg: WireMessage, topic: str, fallback_id: str | None = None) -> Event:
    """A CloudEvent around a message that is not one (type :data:`LEGACY_TYPE`).

    Without a content type, a body that is JSON the mesh can write back is JSON data, anything
    else bytes (``application/octet-stream``). A key that is not text becomes no subject.
    """
    try:
        content_type = msg.content_type
        body = msg.body
        data: Any
        if content_type is None:
            try:
                data = decode_data(body, "application/json") if body else None
                content_type = "application/json" if body else None
            except DecodeError:
                data = bytes(body)
                content_type = "application/octet-stream"
        else:
            if type(content_type) is not str:
                content_type = content_type_text(content_type)
            data = decode_data(body, content_type)
        key = msg.key
        if key is not None and type(key) is not str:
            try:
                key = _text(key, "key")
            except DecodeError:
                key = None
        return Event._trusted(
            type=LEGACY_TYPE,
            source=f"/mesh/legacy/{topic}",
            id=fallback_id if fallback_id and type(fallback_id) is str else new_id(),
            data=data,
            subject=key or None,
            time=None,
            datacontenttype=content_type,
            dataschema=None,
            extensions={},
        )
    except DecodeError:
        raise
    except Exception as exc:  # a safety net, as in from_binary
        raise unreadable(exc, msg.body, msg.headers) from exc


def decode(msg: WireMessage, binding: Binding, topic: str = "", fallback_id: str | None = None) -> Event:
    """Read any form: structured, binary with any listed prefix, or a legacy message (wrapped).

    Raises :class:`DecodeError`, with the raw bytes and headers attached, for a message that
    claims to be a CloudEvent and is not a valid one, or whose data does not match its type;
    never another exception, whatever the input.
    """
    try:
        if binding.h_specversion in msg.headers:  # the common case first
            return from_binary(msg, binding)
        content_type = msg.content_type
        if type(content_type) is not str and content_type is not None:
            content_type = content_type_text(content_type)
        ct = _base_type(content_type)
        if ct == CONTENT_TYPE:
            return from_structured(msg.body)
        if ct == BATCH_CONTENT_TYPE:
            raise DecodeError("batched CloudEvents are not supported on a subscription")
        if _claims_binary(msg, binding):
            return from_binary(msg, binding)
        if ct == "" and msg.body[:1] == b"{" and b'"specversion"' in msg.body:
            try:
                return from_structured(msg.body)
            except DecodeError:
                pass
        return wrap_legacy(msg, topic, fallback_id)
    except DecodeError as exc:
        exc.raw = bytes(msg.body)
        exc.headers = shown_headers(msg.headers)
        raise
    except Exception as exc:  # a safety net, as in from_binary
        raise unreadable(exc, msg.body, msg.headers) from exc

