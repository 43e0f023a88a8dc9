"""Event data to bytes and back, by ``datacontenttype``; shared by every binding.

JSON data is read by orjson, which turns an integer beyond 64 bits into a float and refuses to
write one back, and which writes at most 254 levels of nesting. So reading JSON refuses what
writing would refuse, on a path the common message never takes:

=====================================  ==============================================
JSON body                              read as
=====================================  ==============================================
integer in ``[-2**63, 2**64)``         ``int``, exact
integer outside it                     ``DecodeError`` (never a silent float)
nested 254+ levels (253 for data,      ``DecodeError`` (not ``RecursionError`` when
which structured mode nests once)      written back)
=====================================  ==============================================

The check runs only when a cheap scan of the bytes finds a run of 19 digits or more than 250
brackets; a precise check (stdlib ``json`` for the integers) follows only then.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel

from mesh.errors import DecodeError, EncodeError
from mesh.event import Event, ExtensionValue

__all__ = [
    "canonical",
    "check_json",
    "content_type_text",
    "decode_data",
    "encode_data",
    "is_json",
    "json_dumps",
    "parse_time",
    "shown_headers",
    "unreadable",
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
        if type(body) is not bytes:
            body = bytes(body)
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON data: {exc}", bytes(body)) from exc
        if body.translate(_CLASSES).count(b"0") > 18 or len(body) > _SHORTEST_DEEP:  # inlined: the hot path
            check_json(body, value, 1)
        return value
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
    kept for the last few seconds seen, since events published together share them, and an
    invocation request's deadline comes a fixed time after its own ``time``)."""
    if value.tzinfo is UTC:
        second = (value.second, value.minute, value.hour, value.day, value.month, value.year)
        prefix = _SECONDS.get(second)
        if prefix is None:
            if len(_SECONDS) >= 8:
                _SECONDS.clear()
            prefix = _SECONDS[second] = value.replace(microsecond=0, tzinfo=None).isoformat()
        micro = value.microsecond
        return f"{prefix}.{micro:06d}Z" if micro else prefix + "Z"
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_SECONDS: dict[tuple[int, ...], str] = {}
"""The text up to the second of recently formatted times (a few entries, emptied when full)."""


def parse_time(text: str) -> datetime:
    """RFC 3339 to an aware datetime."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DecodeError(f"'time' is not RFC 3339: {text!r}") from exc
    if value.tzinfo is None:
        raise DecodeError(f"'time' has no offset: {text!r}")
    return value


_CLASSES = bytes(ord("0") if chr(i).isdigit() and i < 128 else ord("[") if i in b"[{" else ord(" ") for i in range(256))
_DIGIT_RUN = b"0" * 19  # the shortest integer that may fall outside 64 bits
_DEPTH = 254  # orjson writes this many levels and refuses more
_SHORTEST_DEEP = 2 * (_DEPTH - 1)  # JSON nested too deep to write back is at least this long


def check_json(body: bytes, value: Any, nesting: int) -> None:
    """Refuse JSON the mesh could not write back: integers beyond 64 bits, too deep a nesting
    (``nesting`` more levels are added when the value is written: 1 for data).

    The common document costs one ``translate`` of its bytes; the precise checks run only on a hit.
    """
    classes = body.translate(_CLASSES)
    if len(body) > 2 * (_DEPTH - nesting) and classes.count(b"[") > _DEPTH - nesting - 1:
        wrapped = value
        for _ in range(nesting):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)
        except TypeError as exc:
            raise DecodeError(f"JSON nested deeper than {_DEPTH - nesting} levels", body) from exc
    if _DIGIT_RUN in classes:
        try:
            json.loads(body, parse_int=_int64)
        except (ValueError, RecursionError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else str(exc)
            raise DecodeError(reason, body) from exc


def _int64(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise DecodeError(f"JSON integer {text[:40]} is beyond 64 bits (it would be read as a float)")
    return value


def content_type_text(value: object) -> str:
    """A content type from a transport slot that did not hold ``str``: UTF-8 bytes, else an error."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError as exc:
            raise DecodeError("the content type is not UTF-8") from exc
    raise DecodeError(f"the content type is a {type(value).__name__}, not text")


def shown_headers(headers: Mapping[Any, Any]) -> dict[str, str]:
    """Headers as text for an error or a dead letter: a ``None`` value is left out, bytes are
    decoded leniently, any other value is shown by ``str``; never raises."""
    out: dict[str, str] = {}
    try:
        for name, value in headers.items():
            if value is None:
                continue
            key = name if isinstance(name, str) else _lenient(name)
            out[key] = value if isinstance(value, str) else _lenient(value)
    except Exception:  # a mapping that fails while iterated: keep what was read
        out.setdefault("<unreadable headers>", "")
    return out


def _lenient(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def unreadable(exc: BaseException, body: object, headers: object) -> DecodeError:
    """The :class:`DecodeError` for an exception no check foresaw (a reader's safety net)."""
    raw = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b""
    shown = shown_headers(headers) if isinstance(headers, Mapping) else {}
    return DecodeError(f"unreadable message: {type(exc).__name__}: {exc}"[:1000], raw, shown)
