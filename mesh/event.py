"""The CloudEvents 1.0 event, the one envelope every block speaks.

>>> e = Event(type="shop.order.created", source="/orders", data={"id": "A1"})
>>> e.specversion, e.datacontenttype
('1.0', 'application/json')
>>> e.with_extensions(partitionkey="A1").extensions
{'partitionkey': 'A1'}
"""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from mesh.errors import InvalidEvent

__all__ = ["Event", "ExtensionValue", "new_id", "now"]

# Names the mesh writes; names it reads are anything the spec allows (see READ_NAME).
WRITE_NAME = re.compile(r"^[a-z][a-z0-9]{0,19}\Z")
READ_NAME = re.compile(r"^[a-z0-9]+\Z")

CORE_ATTRIBUTES = frozenset({"id", "source", "specversion", "type", "subject", "time", "datacontenttype", "dataschema"})
RESERVED = CORE_ATTRIBUTES | {"data", "data_base64"}

ExtensionValue = str | int | bool | bytes | datetime

JSON = "application/json"


_IDS = random.Random()  # seeded from os.urandom; private, so random.seed() in user code cannot repeat ids
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.seed)  # a forked child must not draw its parent's ids
_randbytes = _IDS.randbytes


def new_id() -> str:
    """A random event id: 32 hex digits (128 bits, like a UUID4, at a fraction of the cost).

    Drawn from a private generator seeded from ``os.urandom`` (and again in a forked child):
    a system call per event cost more than the rest of making the event.
    """
    return _randbytes(16).hex()


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def _default_content_type(data: Any) -> str | None:
    kind = type(data)
    if kind is dict or kind is list:
        return JSON
    if data is None:
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        return "application/octet-stream"
    if isinstance(data, str):
        return "text/plain; charset=utf-8"
    return JSON


class Event:
    """A CloudEvent: required ``type`` and ``source``, the optional attributes, extensions, data.

    ``data`` may be a pydantic model, a dict or list (JSON), ``str`` (text) or ``bytes``;
    ``datacontenttype`` defaults from it. Extension names must match ``^[a-z][a-z0-9]{0,19}$``
    and values be ``str``, ``int``, ``bool``, ``bytes`` or ``datetime``.
    Events are treated as immutable once sent: use :meth:`with_extensions` or :meth:`replace`.
    """

    __slots__ = (
        "_body",
        "data",
        "datacontenttype",
        "dataschema",
        "extensions",
        "id",
        "source",
        "specversion",
        "subject",
        "time",
        "type",
    )

    def __init__(
        self,
        type: str,
        source: str,
        data: Any = None,
        *,
        id: str | None = None,
        subject: str | None = None,
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        extensions: dict[str, ExtensionValue] | None = None,
        specversion: str = "1.0",
    ) -> None:
        if not type or not isinstance(type, str):
            raise InvalidEvent("'type' must be a non-empty string")
        if not source or not isinstance(source, str):
            raise InvalidEvent("'source' must be a non-empty string")
        if id is not None and (not id or not isinstance(id, str)):
            raise InvalidEvent("'id' must be a non-empty string")
        if specversion != "1.0":
            raise InvalidEvent(f"unsupported specversion {specversion!r}: the mesh speaks 1.0")
        if time is not None and time.tzinfo is None:
            raise InvalidEvent("'time' must be timezone-aware (RFC 3339 needs an offset)")
        self.type = type
        self.source = source
        self.id = id or new_id()
        self.specversion = specversion
        self.subject = subject
        self.time: datetime | None = time if time is not None else now()
        self.data = data
        self.datacontenttype = datacontenttype or _default_content_type(data)
        self.dataschema = dataschema
        self.extensions = _check_extensions(extensions) if extensions else {}
        self._body: tuple[Any, bytes] | None = None  # (data, its encoding), kept by the codecs

    @classmethod
    def _trusted(
        cls,
        type: str,
        source: str,
        id: str,
        data: Any,
        subject: str | None,
        time: datetime | None,
        datacontenttype: str | None,
        dataschema: str | None,
        extensions: dict[str, ExtensionValue],
        specversion: str = "1.0",
    ) -> Event:
        """Build from already validated parts (the codecs' fast path); no checks."""
        e = object.__new__(cls)
        e.type = type
        e.source = source
        e.id = id
        e.specversion = specversion
        e.subject = subject
        e.time = time
        e.data = data
        e.datacontenttype = datacontenttype
        e.dataschema = dataschema
        e.extensions = extensions
        e._body = None
        return e

    def replace(self, **changes: Any) -> Event:
        """A copy with some attributes changed (``extensions`` replaces the whole mapping)."""
        fields = {name: getattr(self, name) for name in self.__slots__ if name != "_body"}
        fields["extensions"] = dict(self.extensions)
        fields.update(changes)
        ext = fields.pop("extensions")
        e = Event._trusted(**fields, extensions={})
        if self._body is not None and self._body[0] is e.data:
            e._body = self._body  # same data: its encoding stays good
        e.extensions = _check_extensions(ext, strict=False) if ext else {}
        return e

    def with_extensions(self, **extensions: ExtensionValue | None) -> Event:
        """A copy with extensions added (a ``None`` value removes one)."""
        merged = dict(self.extensions)
        for name, value in extensions.items():
            if value is None:
                merged.pop(name, None)
            else:
                _check_name(name, WRITE_NAME)
                merged[name] = _check_value(name, value)
        return self.replace(extensions=merged)

    def without_extensions(self, *names: str) -> Event:
        """A copy without the named extensions."""
        return self.replace(extensions={k: v for k, v in self.extensions.items() if k not in names})

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute or extension by its CloudEvents name."""
        if name in CORE_ATTRIBUTES:
            value = getattr(self, name)
            return default if value is None else value
        return self.extensions.get(name, default)

    @property
    def partitionkey(self) -> str | None:
        """The ``partitionkey`` extension: events with one key keep their order."""
        key = self.extensions.get("partitionkey")
        return None if key is None else str(key)

    def attributes(self) -> dict[str, Any]:
        """Every set attribute and extension by name (not the data)."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in ("subject", "time", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extensions)
        return out

    def to_sdk(self, flavour: str | type[Any] = "http") -> Any:
        """This event as the CloudEvents SDK's ``CloudEvent`` (``http``, ``pydantic`` or ``core``
        flavour, or the class itself); needs the ``cloudevents`` extra."""
        from mesh.integrations.sdk import to_sdk

        return to_sdk(self, flavour)

    @classmethod
    def from_sdk(cls, sdk_event: Any) -> Event:
        """An event from a CloudEvents SDK ``CloudEvent`` of any flavour, every attribute kept."""
        from mesh.integrations.sdk import from_sdk

        return from_sdk(sdk_event)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.attributes() == other.attributes() and _plain(self.data) == _plain(other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, source={self.source!r}, id={self.id!r})"


def _plain(data: Any) -> Any:
    return data.model_dump(mode="json") if isinstance(data, BaseModel) else data


def _check_name(name: str, rule: re.Pattern[str]) -> None:
    if not isinstance(name, str) or not rule.match(name) or name in RESERVED:
        raise InvalidEvent(
            f"invalid extension name {name!r}: names are 1-20 lower-case letters or digits, "
            "starting with a letter, and not a core attribute"
        )


def _check_value(name: str, value: Any) -> ExtensionValue:
    if isinstance(value, str | int | bool | bytes | datetime):
        return value
    raise InvalidEvent(
        f"extension {name!r} has a value of type {type(value).__name__}: use str, int, bool, bytes or datetime"
    )


def _check_extensions(extensions: dict[str, Any], strict: bool = True) -> dict[str, ExtensionValue]:
    rule = WRITE_NAME if strict else READ_NAME
    out: dict[str, ExtensionValue] = {}
    for name, value in extensions.items():
        _check_name(name, rule)
        out[name] = _check_value(name, value)
    return out
