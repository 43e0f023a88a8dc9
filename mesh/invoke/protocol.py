"""The invocation protocol: a request and its reply as CloudEvents (``schemas/invoke-*.schema.json``).

Request (``type: mesh.invoke.request``)::

    id           the request id (new per attempt)
    source       /<caller app id>         who calls: what access control checks
    subject      <method>
    meshreplyto  the caller instance's reply topic (_mesh.reply.<instance id>)
    expirytime   RFC 3339: the caller gives up then; the callee drops the request after it
    partitionkey the request id, or the caller's ``key`` (spreads requests over Kafka partitions)
    data         the method's argument

Reply (``type: mesh.invoke.reply``)::

    source         /<callee app id>
    subject        <method>
    correlationid  the request id
    meshstatus     ok | error
    data           ok: the method's return value; error: {type, message, code[, traceback]}

Pure functions and constants: no broker, no App.
"""

from __future__ import annotations

import functools
import re
import traceback as tb
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mesh import extensions as ext
from mesh.codecs.data import parse_time
from mesh.errors import EventError, MethodNotFound, PermissionDenied, RemoteError
from mesh.event import Event, ExtensionValue

__all__ = [
    "CORRELATION",
    "DEADLINE",
    "INVOKE_PREFIX",
    "PING",
    "REPLY_PREFIX",
    "REPLY_TO",
    "REPLY_TYPE",
    "REQUEST_TYPE",
    "STATUS",
    "MalformedMessage",
    "Request",
    "caller_of",
    "error_data",
    "error_reply",
    "instance_topic",
    "invoke_topic",
    "ok_reply",
    "parse_reply",
    "parse_request",
    "remote_error",
    "reply_address",
    "reply_topic",
    "request_event",
]

REQUEST_TYPE = "mesh.invoke.request"
REPLY_TYPE = "mesh.invoke.reply"
REPLY_TO = ext.REPLY_TO
DEADLINE = ext.DEADLINE
"""The CloudEvents extension for "stale after": the deadline travels under its documented name."""
CORRELATION = ext.CORRELATION
STATUS = ext.STATUS
INVOKE_PREFIX = ext.INVOKE_PREFIX
REPLY_PREFIX = ext.REPLY_PREFIX
PING = "_mesh.ping"
"""The method of a probe: any instance answers it at once with an ok reply (outlier ejection)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# error codes (gRPC's canonical names, lower case) and the caller-side class for each
METHOD_NOT_FOUND = "method_not_found"
PERMISSION_DENIED = "permission_denied"
INVALID_ARGUMENT = "invalid_argument"
MALFORMED = "malformed"
INTERNAL = "internal"
_ERROR_CLASSES: dict[str, type[RemoteError]] = {
    METHOD_NOT_FOUND: MethodNotFound,
    PERMISSION_DENIED: PermissionDenied,
}
_CODES_BY_EXCEPTION: tuple[tuple[type[BaseException], str], ...] = (
    (PermissionError, PERMISSION_DENIED),
    (NotImplementedError, "unimplemented"),
    (TimeoutError, "deadline_exceeded"),
)


class MalformedMessage(EventError):
    """An event that claims to be a request or reply but breaks the protocol."""


def invoke_topic(app_id: str) -> str:
    """The invocation destination of an app: its instances share it as one group."""
    return INVOKE_PREFIX + app_id


@functools.lru_cache(maxsize=1024)
def instance_topic(app_id: str, instance_id: str) -> str:
    """The request destination of one instance of an app (callers that chose it send there)."""
    return f"{INVOKE_PREFIX}{app_id}.{_UNSAFE.sub('_', instance_id)}"


def reply_topic(instance_id: str) -> str:
    """The private reply topic of one App instance (characters no broker objects to)."""
    return REPLY_PREFIX + _UNSAFE.sub("_", instance_id)


def caller_of(event: Event) -> str:
    """The calling app id a request claims: its ``source`` without the leading ``/``."""
    return event.source[1:] if event.source.startswith("/") else event.source


def request_event(
    source: str,
    method: str,
    data: Any,
    *,
    reply_to: str,
    deadline: datetime,
    key: str | None = None,
    extensions: dict[str, ExtensionValue] | None = None,
    id: str | None = None,
) -> Event:
    """A new request (a fresh id per call unless ``id`` is given: invoke retries get their own; an
    actor call sent again keeps its id, so its owner can tell it already has it)."""
    event = Event(REQUEST_TYPE, source, data, subject=method, id=id)
    ext: dict[str, ExtensionValue] = dict(extensions) if extensions else {}
    ext[REPLY_TO] = reply_to
    ext[DEADLINE] = deadline
    ext["partitionkey"] = key if key is not None else event.id
    event.extensions = ext  # names are the protocol's own (checked by the tests), values typed
    return event


@dataclass(frozen=True, slots=True)
class Request:
    """What the callee needs from a request event."""

    id: str
    method: str
    caller: str
    reply_to: str | None
    deadline: datetime | None


def _text(value: ExtensionValue | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def reply_address(event: Event) -> str | None:
    """The reply topic of a (possibly malformed) request, if it names a usable one."""
    reply_to = _text(event.extensions.get(REPLY_TO))
    if reply_to and reply_to.startswith(REPLY_PREFIX):
        return reply_to
    return None


def parse_request(event: Event) -> Request:
    """The request in an event, or :class:`MalformedMessage` saying what is wrong with it."""
    if event.type != REQUEST_TYPE:
        raise MalformedMessage(f"type {event.type!r} is not {REQUEST_TYPE!r}")
    if not event.subject:
        raise MalformedMessage("no method: the request has no subject")
    reply_to = _text(event.extensions.get(REPLY_TO))
    if reply_to is not None and not reply_to.startswith(REPLY_PREFIX):
        raise MalformedMessage(f"reply address {reply_to!r} is not a reply topic ({REPLY_PREFIX}...)")
    raw = event.extensions.get(DEADLINE)
    deadline: datetime | None
    if raw is None or isinstance(raw, datetime):
        deadline = raw
    else:
        try:
            deadline = parse_time(_text(raw) or "")
        except (ValueError, EventError) as exc:
            raise MalformedMessage(f"{DEADLINE} {raw!r} is not an RFC 3339 time") from exc
    return Request(event.id, event.subject, caller_of(event), reply_to, deadline)


def ok_reply(request: Event, source: str, data: Any) -> Event:
    """The reply carrying a method's return value."""
    return _reply(request, source, data, "ok")


def error_reply(request: Event, source: str, data: dict[str, Any]) -> Event:
    """The reply carrying an error (``data`` from :func:`error_data`)."""
    return _reply(request, source, data, "error")


def _reply(request: Event, source: str, data: Any, status: str) -> Event:
    event = Event(REPLY_TYPE, source, data, subject=request.subject)
    event.extensions = {CORRELATION: request.id, STATUS: status}
    return event


def error_data(
    exc: BaseException | None = None,
    *,
    type: str | None = None,
    message: str | None = None,
    code: str | None = None,
    include_traceback: bool = False,
) -> dict[str, Any]:
    """``{type, message, code}`` for an error reply, from an exception or given parts.

    The code is the exception's own ``code`` attribute when it is a string (a
    :class:`~mesh.errors.RemoteError` passed on keeps its type and code), else one mapped from
    the stdlib class, else ``internal``. No traceback text unless ``include_traceback``.
    """
    if exc is not None:
        if isinstance(exc, RemoteError):
            type, message, code = type or exc.type, message or exc.message, code or exc.code
        own = getattr(exc, "code", None)
        if code is None and isinstance(own, str) and own:
            code = own
        if code is None:
            code = next((c for cls, c in _CODES_BY_EXCEPTION if isinstance(exc, cls)), INTERNAL)
    out: dict[str, Any] = {
        "type": type or (type_name(exc) if exc is not None else "Error"),
        "message": message if message is not None else (str(exc) if exc is not None else ""),
        "code": code or INTERNAL,
    }
    if include_traceback and exc is not None:
        out["traceback"] = "".join(tb.format_exception(exc))
    return out


def type_name(exc: BaseException) -> str:
    """The class name an error reply carries (not its module: that is the callee's business)."""
    return exc.__class__.__name__


def parse_reply(event: Event) -> tuple[str, bool, Any]:
    """``(correlation id, ok, data)`` of a reply, or :class:`MalformedMessage`."""
    if event.type != REPLY_TYPE:
        raise MalformedMessage(f"type {event.type!r} is not {REPLY_TYPE!r}")
    correlation = _text(event.extensions.get(CORRELATION))
    if not correlation:
        raise MalformedMessage(f"the reply has no {CORRELATION}")
    status = _text(event.extensions.get(STATUS))
    if status not in ("ok", "error"):
        raise MalformedMessage(f"{STATUS} {status!r} is neither 'ok' nor 'error'")
    return correlation, status == "ok", event.data


def remote_error(data: Any, method: str = "", target: str = "") -> RemoteError:
    """The exception an error reply stands for (:class:`MethodNotFound`, :class:`PermissionDenied`
    or :class:`RemoteError`), carrying its type, message and code."""
    if not isinstance(data, dict):
        return RemoteError("MalformedReply", f"error reply of {target}.{method} has no error object", MALFORMED)
    code = str(data.get("code") or INTERNAL)
    cls = _ERROR_CLASSES.get(code, RemoteError)
    details = {"traceback": data["traceback"]} if isinstance(data.get("traceback"), str) else {}
    return cls(str(data.get("type") or "Error"), str(data.get("message") or ""), code, **details)
