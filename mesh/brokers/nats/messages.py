"""NATS messages and events: headers out, events in, names the JetStream API accepts.

Pure functions (no client, no connection), used by every part of the package.

==================  ===========================================================================
input               what :func:`read_parts` returns
==================  ===========================================================================
a CloudEvent        ``(event, wire, None)``
not UTF-8           ``(None, wire, DecodeError)`` naming the header whose bytes were replaced
                    (nats-py decodes values with U+FFFD) or, with :data:`UNDECODABLE`, the
                    header block the client could not read at all (a status line that is not
                    UTF-8); ``wire`` keeps the payload and headers
anything else       what :func:`mesh.codecs.binary.decode` makes of it (wrapped or an error)
==================  ===========================================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import MappingProxyType

from mesh.codecs.binary import Binding, WireMessage, decode
from mesh.errors import DecodeError
from mesh.event import Event

__all__ = ["UNDECODABLE", "Backlog", "Read", "queue_group", "read_parts", "safe_name", "to_headers", "undecodable"]

log = logging.getLogger("mesh.broker.nats")

Read = tuple[Event | None, WireMessage, DecodeError | None]
"""A message read: the event, or ``None`` and the reason it cannot be read."""

UNDECODABLE = "Mesh-Undecodable"
"""The one header a client hands on for a header block it cannot read (its value says why)."""

_UNSAFE = re.compile(r"[.*>/\\\s\x00-\x1f\x7f]")
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def safe_name(name: str) -> str:
    """A name the JetStream API accepts for streams and consumers.

    ``.``, ``*``, ``>``, path separators, whitespace and control characters become ``_``:
    ``orders.created`` -> ``orders_created``.
    """
    return _UNSAFE.sub("_", name) or "_"


def queue_group(group: str) -> str:
    """The NATS queue group of a mesh group (blanks become ``_``)."""
    return "_".join(group.split()) or "_"


def undecodable(exc: BaseException) -> dict[str, str]:
    """The headers a client hands on for a header block it could not read (see :data:`UNDECODABLE`)."""
    # U+FFFD in the value sends read_parts' existing check for replaced bytes to the reason.
    return {UNDECODABLE: f"\ufffd the header block is not readable ({type(exc).__name__}: {exc})"}


def to_headers(wire: WireMessage) -> dict[str, str]:
    """The NATS headers of an encoded event: ``ce-`` attributes plus ``content-type``."""
    headers = wire.headers
    # encode() returns a fresh dict of str values: extend it in place, copy anything else.
    out: dict[str, str] = headers if type(headers) is dict else {k: str(v) for k, v in headers.items()}
    if wire.content_type is not None:
        out["content-type"] = wire.content_type
    return out


def _suspect(name: str) -> bool:
    low = name.lower()
    return low.startswith("ce-") or low == "content-type" or name == UNDECODABLE


def _refused(name: str, value: str, data: bytes, headers: dict[str, str]) -> DecodeError:
    if name == UNDECODABLE:
        reason = value.lstrip("\ufffd ")
        return DecodeError(reason, bytes(data), {k: v for k, v in headers.items() if k != UNDECODABLE})
    return DecodeError(f"header {name!r} is not UTF-8", bytes(data), dict(headers))


def read_parts(
    data: bytes,
    headers: dict[str, str] | None,
    checked: bool,
    binding: Binding,
    topic: str,
    fallback_id: str | None = None,
) -> Read:
    """The event in a payload and its headers, or the reason it cannot be read; never raises.

    ``checked``: the headers were decoded strictly as UTF-8, so no U+FFFD stands for a bad byte.
    """
    if headers is None:
        wire = WireMessage(data, _NO_HEADERS, None, None)
    else:
        wire = WireMessage(data, headers, None, headers.get("content-type") or headers.get("Content-Type"))
        if not checked:
            # nats-py decodes header values with errors="replace": U+FFFD in an attribute means
            # the bytes on the wire were not UTF-8.
            for name, value in headers.items():
                if "\ufffd" in value and _suspect(name):
                    return None, wire, _refused(name, value, data, headers)
    try:
        return decode(wire, binding, topic, fallback_id), wire, None
    except DecodeError as exc:
        return None, wire, exc


class Backlog:
    """What a core NATS subscription holds ahead of its handler, capped as NATS caps a slow consumer.

    Above ``max_count`` messages or ``max_bytes`` payload bytes the newest message is dropped;
    one warning line per burst (a burst ends once the backlog was empty again). The consume
    loop subtracts what it takes from :attr:`bytes`.
    """

    __slots__ = ("bytes", "dropped", "dropping", "max_bytes", "max_count", "name")

    def __init__(self, name: str, max_count: int, max_bytes: int) -> None:
        self.name = name
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        """Payload bytes held now."""
        self.dropped = 0
        self.dropping = False

    def room(self, count: int, size: int) -> bool:
        """Whether a message of ``size`` bytes joins ``count`` held ones; counts it in if so."""
        held = self.bytes
        if count < self.max_count and held + size <= self.max_bytes:
            if not count:
                self.dropping = False  # caught up: the next drop starts a new burst
            self.bytes = held + size
            return True
        self.dropped += 1
        if not self.dropping:
            self.dropping = True
            log.warning(
                "nats: %s is a slow consumer: messages dropped (%d in all; at most %d messages, %d bytes held)",
                self.name,
                self.dropped,
                self.max_count,
                self.max_bytes,
            )
        return False
