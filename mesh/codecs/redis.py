"""Our CloudEvents binding for Redis Streams (see ``schemas/redis-binding.md``): entry fields <-> wire message.

Binary mode: one field per attribute ``ce_<attr>``, ``content-type`` and ``data``. Structured mode:
one ``event`` field holding the JSON. Pure functions; no Redis client here.

:func:`from_fields` returns a wire message or raises :class:`~mesh.errors.DecodeError` for any
fields (names and values ``bytes`` or ``str``; anything else is refused); :func:`lossy` never
raises.

>>> from mesh.codecs.binary import WireMessage
>>> to_fields(WireMessage(b"{}", {"ce_id": "1"}, None, "application/json"))
['ce_id', '1', 'content-type', 'application/json', 'data', b'{}']
>>> from_fields({b"event": b"{}"}).content_type
'application/cloudevents+json'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from mesh.codecs.binary import WireMessage
from mesh.codecs.bindings import REDIS
from mesh.codecs.structured import CONTENT_TYPE
from mesh.errors import DecodeError

__all__ = ["from_fields", "lossy", "to_fields"]

_SPECVERSION = REDIS.write_prefix + "specversion"


def to_fields(msg: WireMessage) -> list[Any]:
    """The flat field/value list of an XADD for a wire message (binary or structured)."""
    if not msg.headers:
        return ["event", msg.body]
    fields: list[Any] = []
    for item in msg.headers.items():
        fields += item
    if msg.content_type is not None:
        fields += ("content-type", msg.content_type)
    if msg.body:
        fields += ("data", msg.body)
    return fields


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8", bytes(value)) from exc


def _bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError as exc:
            raise DecodeError(f"{what} is not text that UTF-8 can hold") from exc
    raise DecodeError(f"{what} is a {type(value).__name__}, not bytes")


def from_fields(fields: Mapping[Any, Any]) -> WireMessage:
    """The wire message an entry's fields stand for.

    Binary entries (a ``ce_specversion`` field): headers = every field but ``data`` and
    ``content-type``. An entry whose only field is ``event``: structured. Anything else is a
    legacy entry: its ``data`` field (with ``content-type``) if present, else the fields as a
    JSON object. Raises :class:`DecodeError` for field names or texts that are not UTF-8.
    """
    if len(fields) == 1 and b"event" in fields:
        return WireMessage(_bytes(fields[b"event"], "the event field"), {}, None, CONTENT_TYPE)
    headers: dict[str, bytes] = {}
    body = b""
    content_type: str | None = None
    has_data = False
    try:
        for name, value in fields.items():
            if type(name) is not bytes:
                name = _bytes(name, "a field name")
            if name == b"data":
                body = _bytes(value, "the data field")
                has_data = True
            elif name == b"content-type":
                content_type = _bytes(value, "the content-type field").decode()
            else:
                headers[name.decode()] = value if type(value) is bytes else _bytes(value, f"field {name!r}")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"a field name or the content-type is not UTF-8: {exc}", bytes(exc.object)) from exc
    if _SPECVERSION in headers or has_data:
        return WireMessage(body, headers, None, content_type)
    obj = {name: _text(value, f"field {name!r}") for name, value in headers.items()}
    if content_type is not None:
        obj["content-type"] = content_type
    return WireMessage(orjson.dumps(obj), headers, None, "application/json")


def lossy(fields: Mapping[Any, Any]) -> WireMessage:
    """The raw entry as well as it can be shown, for a delivery that could not be decoded."""
    headers: dict[str, str | bytes] = {}
    body = b""
    for name, value in fields.items():
        if value is None:
            continue
        key = (
            name
            if isinstance(name, str)
            else bytes(name).decode("utf-8", "replace")
            if isinstance(name, bytes | bytearray | memoryview)
            else repr(name)
        )
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if key in ("data", "event"):
            if key == "data" or not body:
                body = raw
        else:
            headers[key] = raw
    return WireMessage(body, headers)
