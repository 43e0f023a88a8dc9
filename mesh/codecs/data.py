"""Event data to bytes and back, by ``datacontenttype``; shared by every binding."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel

from mesh.errors import DecodeError, EncodeError
from mesh.event import Event, ExtensionValue

__all__ = [
    "canonical",
    "decode_data",
    "encode_data",
    "is_json",
    "json_dumps",
    "parse_time",
]


@lru_cache(maxsize=256)
def is_json(content_type: str | None) -> bool:
    """Whether a content type carries JSON (``application/json``, ``*/*+json``, ``text/json``)."""
    if content_type is None:
        return False
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json") or base == "text/json"


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return orjson.Fragment(value.__pydantic_serializer__.to_json(value))
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


_OPTS = orjson.OPT_NON_STR_KEYS


def json_dumps(value: Any) -> bytes:
    """Serialise to JSON bytes; pydantic models, dataclasses, datetimes and UUIDs included."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTS)
    except TypeError as exc:
        raise EncodeError(f"event data cannot be serialised as JSON: {exc}") from exc


def encode_data(event: Event) -> bytes:
    """The event's data as body bytes, following its ``datacontenttype`` (kept on the event, so
    a size check before publishing and the codec encode it once)."""
    data = event.data
    cached = event._body
    if cached is not None and cached[0] is data:
        return cached[1]
    body = _encode_data(event, data)
    event._body = (data, body)
    return body


def _encode_data(event: Event, data: Any) -> bytes:
    kind = type(data)
    if (kind is dict or kind is list) and is_json(event.datacontenttype):
        return json_dumps(data)
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, BaseModel):
        return data.__pydantic_serializer__.to_json(data)
    if isinstance(data, str) and not is_json(event.datacontenttype):
        return data.encode()
    if is_json(event.datacontenttype) or event.datacontenttype is None:
        return json_dumps(data)
    raise EncodeError(
        f"data of type {type(data).__name__} cannot be sent as {event.datacontenttype!r}: "
        "pass bytes or str for non-JSON content types"
    )


def decode_data(body: bytes, content_type: str | None) -> Any:
    """Body bytes to data: JSON types parsed, text decoded, anything else kept as bytes."""
    if not body:
        if content_type is None or is_json(content_type):
            return None
        return "" if content_type.startswith("text/") else b""
    if is_json(content_type):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON data: {exc}", bytes(body)) from exc
    if content_type is not None and content_type.startswith("text/"):
        try:
            return bytes(body).decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"text data is not UTF-8: {exc}", bytes(body)) from exc
    return bytes(body)


def canonical(value: ExtensionValue) -> str:
    """An attribute value as its CloudEvents canonical string (``true``, ``42``, RFC 3339, base64)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise EncodeError(f"attribute value of type {type(value).__name__} has no canonical form")


def format_time(value: datetime) -> str:
    """RFC 3339 with ``Z`` for UTC (``isoformat``'s text; the date and time up to the second are
    kept from the previous call, since events published together share them)."""
    global _LAST_SECOND
    if value.tzinfo is UTC:
        second = (value.second, value.minute, value.hour, value.day, value.month, value.year)
        last = _LAST_SECOND
        if second == last[0]:
            prefix = last[1]
        else:
            prefix = value.replace(microsecond=0, tzinfo=None).isoformat()
            _LAST_SECOND = (second, prefix)
        micro = value.microsecond
        return f"{prefix}.{micro:06d}Z" if micro else prefix + "Z"
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_LAST_SECOND: tuple[tuple[int, ...], str] = ((), "")


def parse_time(text: str) -> datetime:
    """RFC 3339 to an aware datetime."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DecodeError(f"'time' is not RFC 3339: {text!r}") from exc
    if value.tzinfo is None:
        raise DecodeError(f"'time' has no offset: {text!r}")
    return value
