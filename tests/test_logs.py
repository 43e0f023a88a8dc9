"""Logging setup: console and JSON formats, levels, debug tracebacks, tamed broker clients."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from mesh import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "mesh-cli"]:
        root.removeHandler(handler)
    for name in ("mesh", "mesh_plugins", *logs.CLIENT_LOGGERS):
        logger = logging.getLogger(name)
        logger.setLevel(logging.NOTSET)
        for f in list(logger.filters):
            logger.removeFilter(f)


def _boom() -> ValueError:
    try:
        raise ValueError("card declined\nsecond line")
    except ValueError as exc:
        return exc


def test_handler_failure_is_one_readable_warning(stream: io.StringIO) -> None:
    logs.configure("INFO", stream=stream)
    logs.log_handler_failure("orders", "billing", "ev-1", 2, _boom(), next_step="retried in 1s")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARNING mesh.delivery  handler failed on orders [billing] event ev-1 attempt 2" in lines[0]
    assert "ValueError: card declined; retried in 1s" in lines[0]


def test_dead_letter_and_connection_lines(stream: io.StringIO) -> None:
    logs.configure("INFO", stream=stream)
    logs.log_dead_letter("orders", "billing", "ev-1", "orders.dlq", "ValueError: card declined")
    logs.log_connection_lost("rabbitmq", "amqp://guest:***@127.0.0.1:5672/", "connection reset")
    logs.log_reconnected("rabbitmq", "amqp://guest:***@127.0.0.1:5672/")
    out = stream.getvalue().splitlines()
    assert len(out) == 3
    assert "dead-lettered event ev-1 from orders [billing] to orders.dlq" in out[0]
    assert "INFO    mesh.connection  lost connection to rabbitmq" in out[1]
    assert "reconnected to rabbitmq" in out[2]


def test_log_level_is_honoured(stream: io.StringIO) -> None:
    logs.configure("WARNING", stream=stream)
    logs.log_reconnected("nats", "nats://127.0.0.1:4222")  # INFO: below the level
    logging.getLogger("mesh.app").debug("hidden")
    assert stream.getvalue() == ""
    logs.configure("DEBUG", stream=stream)
    logging.getLogger("mesh.app").debug("shown")
    assert "shown" in stream.getvalue()


def test_json_format_has_the_fields(stream: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=stream)
    logs.log_handler_failure("orders", "billing", "ev-1", 3, _boom())
    record = orjson.loads(stream.getvalue().splitlines()[0])
    assert record["level"] == "WARNING" and record["logger"] == "mesh.delivery"
    assert record["topic"] == "orders" and record["group"] == "billing"
    assert record["event_id"] == "ev-1" and record["attempt"] == 3
    assert record["error"] == "ValueError: card declined"
    assert "time" in record and "message" in record


def test_exceptions_are_one_line_unless_debug(stream: io.StringIO) -> None:
    logs.configure("INFO", stream=stream)
    logging.getLogger("mesh.app").error("stop failed", exc_info=_boom())
    assert stream.getvalue().splitlines() == [stream.getvalue().strip()]
    assert "stop failed [ValueError: card declined]" in stream.getvalue()
    second = io.StringIO()
    logs.configure("INFO", debug=True, stream=second)
    logging.getLogger("mesh.app").error("stop failed", exc_info=_boom())
    assert "Traceback (most recent call last)" in second.getvalue()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="console or json"):
        logs.configure(fmt="xml")


def test_client_reconnect_messages_are_tamed(stream: io.StringIO) -> None:
    logs.configure("INFO", stream=stream)
    client = logging.getLogger("aio_pika.robust_connection")
    for _ in range(30):  # aio-pika says this every second while the server is away
        client.warning("Connection attempt to %r failed: %r. Reconnecting after %r seconds.", "amqp://h", "refused", 1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Reconnecting after 1 seconds" in lines[0]


def test_client_traceback_becomes_one_line(stream: io.StringIO) -> None:
    logs.configure("INFO", stream=stream)

    class ChannelInvalidStateError(Exception):
        pass

    ChannelInvalidStateError.__module__ = "aiormq.exceptions"
    try:
        raise ChannelInvalidStateError("writer is None")
    except ChannelInvalidStateError as exc:
        err = exc
    logging.getLogger("asyncio").error("Exception in callback OneShotCallback.__call__", exc_info=err)
    logging.getLogger("nats.aio.client").error("nats: encountered error", exc_info=_boom())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "Exception in callback OneShotCallback.__call__: ChannelInvalidStateError: writer is None" in lines[0]
    assert "nats: encountered error: ValueError: card declined" in lines[1]
    assert "Traceback" not in stream.getvalue()


def test_repeats_come_back_after_the_window_with_a_count() -> None:
    now = [0.0]
    tamer = logs.TameClientFilter(window=10, clock=lambda: now[0])

    def record(seconds: int) -> logging.LogRecord:
        return logging.LogRecord("nats", logging.WARNING, __file__, 1, "Reconnecting after %d s", (seconds,), None)

    assert tamer.filter(record(1))
    assert not tamer.filter(record(2))
    assert not tamer.filter(record(3))
    now[0] = 11
    again = record(4)
    assert tamer.filter(again)
    assert again.getMessage() == "Reconnecting after 4 s (and 2 more like it)"


def test_foreign_asyncio_errors_keep_their_traceback(stream: io.StringIO) -> None:
    logs.configure("INFO", stream=stream)
    logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=_boom())
    assert "ValueError: card declined" in stream.getvalue()  # one-line in console format, not swallowed
