"""Structured content mode: the whole event as one JSON document (``application/cloudevents+json``).

>>> from mesh.event import Event
>>> e = Event(type="t", source="/s", data={"a": 1}, id="1")
>>> from_structured(to_structured(e)).data
{'a': 1}
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import BaseModel

from mesh.codecs.data import format_time, is_json, json_dumps, parse_time
from mesh.errors import DecodeError
from mesh.event import READ_NAME, Event, ExtensionValue

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
        if isinstance(value, bytes):
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
    if not isinstance(doc, dict):
        raise DecodeError(f"a structured event must be a JSON object, not {type(doc).__name__}")
    specversion = _required(doc, "specversion")
    if specversion != "1.0":
        raise DecodeError(f"unsupported specversion {specversion!r}")
    content_type = doc.get("datacontenttype")
    time = doc.get("time")
    extensions: dict[str, ExtensionValue] = {}
    for name, value in doc.items():
        if name in _KNOWN:
            continue
        if not READ_NAME.match(name):
            raise DecodeError(f"invalid attribute name {name!r}")
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
        if isinstance(data, str) and content_type is not None and not is_json(content_type):
            data = data if content_type.startswith("text/") else data.encode()
    return Event._trusted(
        type=_required(doc, "type"),
        source=_required(doc, "source"),
        id=_required(doc, "id"),
        data=data,
        subject=_optional_str(doc, "subject"),
        time=parse_time(time) if isinstance(time, str) else None,
        datacontenttype=content_type if isinstance(content_type, str) else None,
        dataschema=_optional_str(doc, "dataschema"),
        extensions=extensions,
    )


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
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        raise DecodeError(f"invalid JSON: {exc}", raw) from exc
    try:
        return from_dict(doc)
    except DecodeError as exc:
        exc.raw = body.encode() if isinstance(body, str) else bytes(body)
        raise
