"""Logging for ``mesh run`` and friends: one readable line per thing worth knowing.

=====================  =================================================================
setting                effect
=====================  =================================================================
``fmt="console"``      ``12:00:01 WARNING mesh.delivery  handler failed ...`` on stderr
``fmt="json"``         one JSON object per line (``time``, ``level``, ``logger``,
                       ``message``, the record's ``mesh_*`` fields, ``error``)
``level``              the config's ``log_level`` (``DEBUG`` .. ``ERROR``)
``debug=True``         level DEBUG and full tracebacks (otherwise an exception is its
                       one-line ``Type: message``)
=====================  =================================================================

Broker clients are tamed by :class:`TameClientFilter` on the handler, for records of their
loggers (``aio_pika``, ``aiormq``, ``nats``, ..., and ``asyncio`` for callbacks a client left
failing): a traceback becomes one line, and a message repeated every second ("Reconnecting
after 1 seconds") is written once per ``window`` with the count of those held back.

The mesh's own words for failures and connections are the ``log_*`` helpers below: the pipeline
and the adapters call them on the failure path only, so a successful delivery logs nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson

__all__ = [
    "CLIENT_LOGGERS",
    "ConsoleFormatter",
    "JsonFormatter",
    "TameClientFilter",
    "configure",
    "log_connection_lost",
    "log_dead_letter",
    "log_handler_failure",
    "log_memory_fallback",
    "log_reconnected",
    "one_line",
]

CLIENT_LOGGERS = ("aio_pika", "aiormq", "nats", "aiokafka", "redis", "asyncio")
"""Loggers of broker clients (and asyncio, which reports their failing callbacks)."""

delivery_log = logging.getLogger("mesh.delivery")
connection_log = logging.getLogger("mesh.connection")
config_log = logging.getLogger("mesh.config")

_HANDLER_NAME = "mesh-cli"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the type alone when the message is empty)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k.startswith("mesh_")}


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger  message``; exceptions as one line unless ``debug``."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s  %(message)s", "%H:%M:%S")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line (with ``debug``, followed by its traceback)."""
        record.exc_text = None  # formatted per formatter: a one-line and a full form never mix
        exc = record.exc_info[1] if record.exc_info else None
        if self.debug or exc is None:
            return super().format(record)
        saved, record.exc_info = record.exc_info, None
        try:
            return f"{super().format(record)} [{one_line(exc)}]"
        finally:
            record.exc_info = saved


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for machines."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out[key.removeprefix("mesh_")] = value
        if record.exc_info and record.exc_info[1] is not None:
            out["error"] = one_line(record.exc_info[1])
            if self.debug:
                out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TameClientFilter(logging.Filter):
    """Turns a client's tracebacks into one line and writes a repeated message once per ``window``."""

    def __init__(self, window: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to write the record (changed in place to one line)."""
        top = record.name.split(".")[0]
        if top not in CLIENT_LOGGERS or (top == "asyncio" and not _from_client(record)):
            return True
        if record.exc_info and record.exc_info[1] is not None:
            error = one_line(record.exc_info[1])
            record.msg, record.args = f"{record.getMessage()}: {error}", None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        key = (record.name, _template(record))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} (and {held} more like it)", None
        return True


def _template(record: logging.LogRecord) -> str:
    # "Reconnecting after %r seconds" and the same text with digits formatted in are one message
    text = str(record.msg)
    return "".join("#" if c.isdigit() else c for c in text)


def _from_client(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    text = record.getMessage()
    modules = (type(exc).__module__ if exc is not None else "").split(".")[0]
    return modules in {"aio_pika", "aiormq", "pamqp", "nats", "aiokafka", "redis"} or any(
        name in text for name in ("aio_pika", "aiormq", "nats.aio", "aiokafka")
    )


def configure(
    level: str | int = "INFO",
    fmt: str = "console",
    *,
    debug: bool = False,
    stream: IO[str] | None = None,
    window: float = 60.0,
) -> logging.Handler:
    """Send log records to ``stream`` (stderr) in ``fmt``; call again to change them.

    The root logger gets one handler (a second call replaces it); the mesh's loggers get
    ``level`` (DEBUG with ``debug``); broker clients' loggers are tamed (WARNING and one line
    per failure unless ``debug``).
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"log format must be console or json, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(debug) if fmt == "json" else ConsoleFormatter(debug))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    mesh_level = logging.DEBUG if debug else (level if isinstance(level, int) else logging.getLevelName(level.upper()))
    logging.getLogger("mesh").setLevel(mesh_level)
    logging.getLogger("mesh_plugins").setLevel(mesh_level)
    if not debug:
        handler.addFilter(TameClientFilter(window))  # on the handler: it sees child loggers' records too
    for name in CLIENT_LOGGERS:
        if name != "asyncio":
            logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    return handler


# -- the mesh's own words: called on failure paths only ------------------------------------------


def log_handler_failure(
    topic: str, group: str, event_id: str, attempt: int, exc: BaseException, *, next_step: str = ""
) -> None:
    """One WARNING for a failed handler run (``next_step``: "retried in 2s", "dead-lettered", ...)."""
    delivery_log.warning(
        "handler failed on %s [%s] event %s attempt %d: %s%s",
        topic,
        group,
        event_id,
        attempt,
        one_line(exc),
        f"; {next_step}" if next_step else "",
        exc_info=exc if delivery_log.isEnabledFor(logging.DEBUG) else None,
        extra={
            "mesh_topic": topic,
            "mesh_group": group,
            "mesh_event_id": event_id,
            "mesh_attempt": attempt,
            "mesh_error": one_line(exc),
        },
    )


def log_dead_letter(topic: str, group: str, event_id: str, target: str, reason: str) -> None:
    """One WARNING for an event written to its dead-letter destination."""
    delivery_log.warning(
        "dead-lettered event %s from %s [%s] to %s: %s",
        event_id,
        topic,
        group,
        target,
        reason,
        extra={
            "mesh_topic": topic,
            "mesh_group": group,
            "mesh_event_id": event_id,
            "mesh_dead_letter": target,
            "mesh_error": reason,
        },
    )


def log_connection_lost(broker: str, address: str, reason: str = "") -> None:
    """One INFO when a broker connection drops (the client reconnects by itself)."""
    connection_log.info(
        "lost connection to %s at %s%s; reconnecting",
        broker,
        address,
        f" ({reason})" if reason else "",
        extra={"mesh_broker": broker, "mesh_address": address},
    )


def log_reconnected(broker: str, address: str) -> None:
    """One INFO when a broker connection is back."""
    connection_log.info(
        "reconnected to %s at %s", broker, address, extra={"mesh_broker": broker, "mesh_address": address}
    )


def log_memory_fallback(command: str, where: str) -> None:
    """The loud WARNING of a command that talks to other processes but fell back to the memory broker."""
    config_log.warning(
        "%s: no config file found (%s), so this uses the in-process memory broker, which no other "
        "process can reach; pass --config, set MESH_CONFIG, or add ./mesh.yaml",
        command,
        where,
        extra={"mesh_command": command},
    )
