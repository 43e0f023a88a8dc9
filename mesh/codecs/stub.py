"""Bounded dead-letter stubs: what is written when the dead letter itself cannot be.

A delivery whose dead letter the broker refuses for a reason that cannot go away (larger than
``max_event_bytes``, data that no content mode can carry) is dead-lettered as a *stub*: an event
of type :data:`STUB_TYPE` whose JSON data says what the message was, never the whole of it.

================  ==========================================================================
data field        holds
================  ==========================================================================
``reason``        why the stub was written (at most 500 characters)
``attributes``    the event's attributes, or the raw message's ``key`` and ``content-type``
                  (canonical strings; at most :data:`MAX_ENTRIES` of :data:`MAX_TEXT` chars)
``headers``       the raw message's headers (undecodable only; ``None`` values left out)
``size``          the full size of the body in bytes
``sha256``        the hex SHA-256 digest of the whole body
``body``          the body's first bytes: UTF-8 text, or base64 when it is not text
``bodyencoding``  ``text`` or ``base64``
``truncated``     whether ``body`` is shorter than the body
================  ==========================================================================

Size: the encoded stub is at most ``max(limit, STUB_OVERHEAD)`` bytes in every binding and both
content modes (the body gets what is left of ``limit`` after :data:`STUB_OVERHEAD`), so it fits
whenever ``limit >= STUB_OVERHEAD`` and is never more than ``limit + STUB_OVERHEAD``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from mesh.codecs.binary import WireMessage
from mesh.codecs.data import canonical, encode_data, shown_headers
from mesh.errors import EventError
from mesh.event import Event, new_id

__all__ = ["MAX_ENTRIES", "MAX_TEXT", "STUB_OVERHEAD", "STUB_TYPE", "oversize_stub", "undecodable_stub"]

STUB_TYPE = "mesh.deadletter.stub"
STUB_SOURCE = "/mesh/deadletter"
STUB_OVERHEAD = 16 * 1024
"""Bytes the stub may take besides its body (attributes, headers, reason, envelope)."""
MAX_ENTRIES = 24
MAX_TEXT = 200
MAX_REASON = 500
_TABLE_BUDGET = 5 * 1024  # encoded bytes for each of ``attributes`` and ``headers``


def undecodable_stub(raw: WireMessage | None, reason: str, limit: int) -> Event:
    """The stub for a message that could not be decoded (``raw`` as the broker gave it, if any)."""
    body: Any = raw.body if raw is not None else b""
    body = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b""
    attributes: dict[str, str] = {}
    headers: dict[str, str] = {}
    if raw is not None:
        if raw.key is not None:
            attributes["key"] = _lenient(raw.key)
        if raw.content_type is not None:
            attributes["content-type"] = _lenient(raw.content_type)
        headers = shown_headers(raw.headers) if isinstance(raw.headers, Mapping) else {}
    return _stub(reason, attributes, headers, body, limit, None)


def oversize_stub(event: Event, reason: str, limit: int) -> Event:
    """The stub for an event whose dead letter cannot be written (too large, data no mode carries)."""
    attributes: dict[str, str] = {}
    for name, value in event.attributes().items():
        try:
            attributes[name] = canonical(value)
        except (EventError, TypeError):
            attributes[name] = _lenient(value)
    try:
        body = encode_data(event)
    except EventError as exc:  # data no content type can carry: say so instead of the bytes
        body = b""
        reason = f"{reason} (data not encodable: {exc})"
    keep_id = event.id if isinstance(event.id, str) and 0 < len(event.id) <= MAX_TEXT else None
    return _stub(reason, attributes, {}, body, limit, keep_id)


def _stub(
    reason: str, attributes: dict[str, str], headers: dict[str, str], body: bytes, limit: int, ev_id: str | None
) -> Event:
    data: dict[str, Any] = {
        "reason": _lenient(reason[:MAX_REASON]),
        "attributes": _bounded(attributes),
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    if headers:
        data["headers"] = _bounded(headers)
    budget = max(0, limit - STUB_OVERHEAD)
    text, encoding = _prefix(body, budget)
    data["body"], data["bodyencoding"] = text, encoding
    kept = len(text.encode()) if encoding == "text" else budget * 3 // 4
    data["truncated"] = kept < len(body)
    return Event(STUB_TYPE, STUB_SOURCE, data, id=ev_id or new_id(), datacontenttype="application/json")


def _prefix(body: bytes, budget: int) -> tuple[str, str]:
    """The body's first bytes as text if its JSON string fits the budget, else as base64."""
    head = body[:budget]
    for cut in range(4):  # a cut may split a UTF-8 sequence: drop up to 3 bytes of it
        try:
            text = head[: len(head) - cut].decode()
        except UnicodeDecodeError:
            continue
        if len(orjson.dumps(text)) <= budget + 2:
            return text, "text"
        break
    return base64.b64encode(body[: budget * 3 // 4]).decode(), "base64"


def _bounded(entries: dict[str, str]) -> dict[str, str]:
    """At most ``MAX_ENTRIES`` entries of ``MAX_TEXT`` characters, at most the table budget encoded."""
    out: dict[str, str] = {}
    used = 0
    for name, value in entries.items():
        if len(out) >= MAX_ENTRIES:
            break
        key, text = _lenient(name[:MAX_TEXT]), _lenient(value[:MAX_TEXT])
        used += len(orjson.dumps([key, text]))
        if used > _TABLE_BUDGET:
            break
        out[key] = text
    return out


def _lenient(value: object) -> str:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()  # lone surrogates cannot be written
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value).encode("utf-8", "replace").decode()
    except Exception:
        return f"<{type(value).__name__}>"
