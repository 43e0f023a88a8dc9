"""The official CloudEvents SDK's own objects, converted both ways without loss.

==========================================  ========================================================
SDK flavour                                 ``to_sdk(event, flavour)`` gives / ``from_sdk`` reads
==========================================  ========================================================
``http`` (``cloudevents.v1.http``)          attributes as the SDK keeps them: ``time`` RFC 3339 text
``pydantic`` (``cloudevents.v1.pydantic``)  ``time`` a datetime; extensions as pydantic extras
``core`` (``cloudevents.core.v1.event``)    ``time`` a datetime (the SDK's 2.x core)
==========================================  ========================================================

Extensions keep their Python values (``int``, ``bool``, ``bytes``, ``datetime``) both ways, so
``Event.from_sdk(event.to_sdk()) == event``. Data that is a pydantic model goes to the SDK as its
JSON-able dict. SDK 1.x paths (``cloudevents.http``, ``cloudevents.pydantic``) are found too.
The SDK is the optional extra ``cloudevents``; nothing here imports it before it is asked for.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mesh.codecs.data import format_time, parse_time
from mesh.event import CORE_ATTRIBUTES, Event
from mesh.integrations import MissingExtra

__all__ = ["FLAVOURS", "from_sdk", "is_sdk_class", "is_sdk_event", "sdk_class", "to_sdk"]

FLAVOURS = {
    "http": ("cloudevents.v1.http", "cloudevents.http"),
    "pydantic": ("cloudevents.v1.pydantic", "cloudevents.pydantic"),
    "core": ("cloudevents.core.v1.event",),
}
"""Where each flavour's ``CloudEvent`` class lives (SDK 2.x first, then 1.x)."""

_BASES = ("cloudevents.v1.abstract", "cloudevents.abstract", "cloudevents.core.v1.event")


def sdk_class(flavour: str = "http") -> type[Any]:
    """The SDK's ``CloudEvent`` class of one flavour (``http``, ``pydantic`` or ``core``)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown CloudEvents SDK flavour {flavour!r}: use one of {', '.join(FLAVOURS)}")
    for module in FLAVOURS[flavour]:
        try:
            cls: type[Any] = importlib.import_module(module).CloudEvent
            return cls
        except (ImportError, AttributeError):
            continue
    raise MissingExtra("the CloudEvents SDK is not installed: pip install 'event-mesh[cloudevents]'")


def _bases() -> tuple[type[Any], ...]:
    """The SDK's CloudEvent base classes that are importable (none when the SDK is absent)."""
    import sys

    if not any(name == "cloudevents" or name.startswith("cloudevents.") for name in sys.modules):
        return ()  # never imported by anyone: nothing can be an SDK object yet
    out = []
    for module in _BASES:
        try:
            out.append(importlib.import_module(module).CloudEvent)
        except (ImportError, AttributeError):
            continue
    return tuple(out)


def is_sdk_event(obj: object) -> bool:
    """Whether ``obj`` is a CloudEvent object of the SDK (any flavour)."""
    bases = _bases()
    return bool(bases) and isinstance(obj, bases)


def is_sdk_class(annotation: object) -> bool:
    """Whether ``annotation`` is an SDK CloudEvent class (a handler parameter to fill with one)."""
    if not isinstance(annotation, type) or not (annotation.__module__ or "").startswith("cloudevents"):
        return False
    bases = _bases()
    return bool(bases) and issubclass(annotation, bases)


def _flavour_of(cls: type[Any]) -> str:
    module = cls.__module__
    if "pydantic" in module:
        return "pydantic"
    return "core" if module.startswith("cloudevents.core") else "http"


def to_sdk(event: Event, flavour: str | type[Any] = "http") -> Any:
    """The event as an SDK ``CloudEvent`` of ``flavour`` (a name, or the class itself)."""
    cls = sdk_class(flavour) if isinstance(flavour, str) else flavour
    kind = _flavour_of(cls)
    attributes: dict[str, Any] = dict(event.attributes())
    if event.time is not None:
        attributes["time"] = format_time(event.time) if kind == "http" else event.time
    data = event.data
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return cls(attributes, data)


def _attributes(obj: Any) -> tuple[dict[str, Any], Any]:
    if isinstance(obj, BaseModel):  # pydantic flavour: its get_attributes() turns values into text
        attributes = {k: getattr(v, "value", v) for k, v in obj.__dict__.items() if k != "data"}  # enums
        attributes.update(obj.model_extra or {})
    elif hasattr(obj, "get_attributes"):
        attributes = dict(obj.get_attributes())
    else:  # SDK 1.x abstract events iterate over their attribute names
        attributes = {name: obj[name] for name in obj}
    data = obj.get_data() if hasattr(obj, "get_data") else getattr(obj, "data", None)
    return attributes, data


def from_sdk(obj: Any) -> Event:
    """A mesh :class:`~mesh.Event` from an SDK ``CloudEvent`` (every attribute and extension kept)."""
    if not is_sdk_event(obj):
        raise TypeError(f"not a CloudEvents SDK event: {type(obj).__name__}")
    attributes, data = _attributes(obj)
    time = attributes.get("time")
    if isinstance(time, str):
        time = parse_time(time)
    extensions = {
        name: value
        for name, value in attributes.items()
        if name not in CORE_ATTRIBUTES and name not in ("data", "data_base64") and value is not None
    }
    event = Event(
        str(attributes["type"]),
        str(attributes["source"]),
        data,
        id=str(attributes["id"]) if attributes.get("id") else None,
        subject=attributes.get("subject"),
        time=time if isinstance(time, datetime) else None,
        datacontenttype=attributes.get("datacontenttype"),
        dataschema=attributes.get("dataschema"),
        specversion=str(attributes.get("specversion") or "1.0"),
    )
    if time is None:
        event.time = None
    if extensions:  # names the SDK allows (any length): read, not write, rules
        event = event.replace(extensions={k: _value(v) for k, v in extensions.items()})
    return event


def _value(value: Any) -> Any:
    return value if isinstance(value, str | int | bool | bytes | datetime) else str(value)
