"""Structured content mode: the whole event as one JSON document (``application/cloudevents+json``).

The readers return an event or raise :class:`~mesh.errors.DecodeError`, for any input, and what
they return can be written again in either mode:

===========================================  ===========================================
document                                     read as
===========================================  ===========================================
extension value ``null``                     absent
extension value object / array / float       its JSON text (a string extension)
``datacontenttype`` or ``time`` not a str    ``DecodeError``
non-JSON ``datacontenttype``, string data    text (``text/*``) or its UTF-8 bytes
non-JSON ``datacontenttype``, other data     ``DecodeError`` (binary mode could not carry it)
integer beyond 64 bits, 255+ levels deep     ``DecodeError`` (see :mod:`mesh.codecs.data`)
``from_dict`` of a value orjson cannot       ``DecodeError``
write (a set, an object, a big ``int``)
===========================================  ===========================================

>>> from mesh.event import JSON, Event
>>> e = Event(type="t", source="/s", data={"a": 1}, id="1")
>>> from_structured(to_structured(e)).data
{'a': 1}
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import BaseModel

from mesh.codecs.data import (
    _CLASSES,
    _DIGIT_RUN,
    _SHORTEST_DEEP,
    check_json,
    format_time,
    is_json,
    json_dumps,
    parse_time,
    unreadable,
)
from mesh.errors import DecodeError
from mesh.event import JSON, READ_NAME, Event, ExtensionValue

__all__ = ["CONTENT_TYPE", "from_dict", "from_structured", "to_dict", "to_structured"]

CONTENT_TYPE = "application/cloudevents+json"


def to_dict(event: Event) -> dict[str, Any]:
    """The event as the JSON format's object (data embedded, bytes as ``data_base64``)."""
    out: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        out["subject"] = event.subject
    if event.time is not None:
        out["time"] = format_time(event.time)
    if event.datacontenttype is not None:
        out["datacontenttype"] = event.datacontenttype
    if event.dataschema is not None:
        out["dataschema"] = event.dataschema
    for name, value in event.extensions.items():
        if type(value) is str:
            out[name] = value
        elif isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode()
        else:
            out[name] = format_time(value) if hasattr(value, "isoformat") else value  # type: ignore[arg-type]
    data = event.data
    if data is None:
        return out
    if isinstance(data, bytes | bytearray | memoryview):
        out["data_base64"] = base64.b64encode(bytes(data)).decode()
    elif isinstance(data, BaseModel):
        out["data"] = orjson.Fragment(data.__pydantic_serializer__.to_json(data))
    else:
        out["data"] = data
    return out


def to_structured(event: Event) -> bytes:
    """The event as JSON bytes."""
    return json_dumps(to_dict(event))


def _required(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise DecodeError(f"missing or empty required attribute {name!r}")
    return value


def from_dict(doc: Any) -> Event:
    """An event from the JSON format's object; liberal in what it accepts, strict on the spec."""
    try:
        orjson.dumps(doc)  # refuse what could not be written back: depth, big ints, non-JSON values
    except TypeError as exc:
        raise DecodeError(f"not a JSON document the mesh can write: {exc}") from exc
    try:
        return _from_doc(doc)
    except DecodeError:
        raise
    except Exception as exc:  # a safety net: the checks are meant to leave nothing here
        raise unreadable(exc, b"", {}) from exc


def _from_doc(doc: Any) -> Event:
    if not isinstance(doc, dict):
        raise DecodeError(f"a structured event must be a JSON object, not {type(doc).__name__}")
    specversion = _required(doc, "specversion")
    if specversion != "1.0":
        raise DecodeError(f"unsupported specversion {specversion!r}")
    content_type = doc.get("datacontenttype")
    if content_type is not None and type(content_type) is not str:
        raise DecodeError(f"'datacontenttype' must be a string, not {type(content_type).__name__}")
    time = doc.get("time")
    if time is not None and type(time) is not str:
        raise DecodeError(f"'time' must be a string, not {type(time).__name__}")
    extensions: dict[str, ExtensionValue] = {}
    for name, value in doc.items():
        if name in _KNOWN:
            continue
        if name not in _NAMES_READ:
            if type(name) is not str or not READ_NAME.match(name):
                raise DecodeError(f"invalid attribute name {name!r}")
            if len(_NAMES_READ) < 1024:
                _NAMES_READ.add(name)
        if value is None:
            continue
        extensions[name] = value if isinstance(value, str | int | bool) else orjson.dumps(value).decode()
    if "data_base64" in doc:
        try:
            data: Any = base64.b64decode(doc["data_base64"], validate=True)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"invalid data_base64: {exc}") from exc
    else:
        data = doc.get("data")
        if data is not None and content_type is None:
            content_type = JSON  # the JSON format: an absent datacontenttype means application/json
        elif data is not None and content_type is not None and not is_json(content_type):
            if not isinstance(data, str):
                raise DecodeError(
                    f"data of type {type(data).__name__} with the non-JSON datacontenttype {content_type!r} "
                    "(binary mode could not carry it)"
                )
            data = data if content_type.startswith("text/") else data.encode()
    return Event._trusted(
        type=_required(doc, "type"),
        source=_required(doc, "source"),
        id=_required(doc, "id"),
        data=data,
        subject=_optional_str(doc, "subject"),
        time=parse_time(time) if time is not None else None,
        datacontenttype=content_type,
        dataschema=_optional_str(doc, "dataschema"),
        extensions=extensions,
    )


_NAMES_READ: set[str] = set()
"""Extension names already checked against the spec's rule (bounded)."""


def _optional_str(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None or isinstance(value, str):
        return value
    raise DecodeError(f"attribute {name!r} must be a string")


_KNOWN = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
    }
)


def from_structured(body: bytes | str) -> Event:
    """An event from JSON bytes."""
    try:
        raw = body if type(body) is bytes else body.encode() if isinstance(body, str) else bytes(body)
    except (UnicodeEncodeError, TypeError, ValueError) as exc:
        raise DecodeError(f"not JSON text: {exc}") from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}", raw) from exc
    try:
        if len(raw) > _SHORTEST_DEEP or _DIGIT_RUN in raw.translate(_CLASSES):
            check_json(raw, doc, 0)
        return _from_doc(doc)
    except DecodeError as exc:
        exc.raw = raw
        raise
    except Exception as exc:  # a safety net, as in from_dict
        raise unreadable(exc, raw, {}) from exc
