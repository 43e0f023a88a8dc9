"""What the two NATS adapters share: the connection, broker-side names and message conversion.

Only this module, :mod:`mesh.brokers.nats` and :mod:`mesh.brokers.nats.jetstream` import nats-py.

The first connection is bounded: every server of the URL is tried (twice) within
``connect_timeout`` and a failure is one :class:`~mesh.errors.BrokerConnectionError`. Once
connected, the client reconnects on its own (``max_reconnect_attempts``, -1: forever) and
restores its subscriptions; the adapters are told through ``on_reconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client

try:
    from nats.aio.client import _validate_subject
except ImportError:  # a nats-py without it: the same rule (no blank, no line break)

    def _validate_subject(subject: str, *, strict: bool = False) -> None:
        if not subject or re.search(r"[ \t\r\n]", subject):
            raise BadSubjectError


from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import AuthorizationError, BadSubjectError, MaxPayloadError, NoServersError, SlowConsumerError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from mesh.brokers.nats.options import NatsOptions
from mesh.codecs.binary import Binding, WireMessage, decode
from mesh.errors import BrokerConnectionError, ConfigError, DecodeError
from mesh.event import Event

__all__ = [
    "FastClient",
    "DEFAULT_URL",
    "barrier",
    "display_address",
    "open_connection",
    "read",
    "read_parts",
    "safe_name",
    "servers_of",
    "shut",
    "to_headers",
    "validate_options",
]

log = logging.getLogger("mesh.broker.nats")

DEFAULT_URL = "nats://127.0.0.1:4222"

_UNSAFE = re.compile(r"[.*>/\\\s\x00-\x1f\x7f]")
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_KEY_CACHE = 1_000
"""Header names remembered as valid (per connection) so the fast publish path skips nats-py's checks."""

_Options = TypeVar("_Options", bound=NatsOptions)

Direct = Callable[[bytes, bytes, "dict[str, str] | None", bool], None]
"""Takes one message of a subscription delivered directly: subject, payload, headers, headers checked."""


def validate_options(model: type[_Options], options: Mapping[str, Any]) -> _Options:
    """The broker's options validated, or one :class:`ConfigError` listing every problem."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = [("broker.options." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(problems) from None


def servers_of(url: str | None) -> list[str]:
    """The server URLs of a ``nats://`` URL or comma-separated list of them."""
    servers = [part.strip() for part in (url or DEFAULT_URL).split(",") if part.strip()]
    return [s if "://" in s else f"nats://{s}" for s in servers] or [DEFAULT_URL]


def display_address(servers: list[str]) -> str:
    """The servers as one string for messages, passwords masked."""
    shown = []
    for server in servers:
        parts = urlsplit(server)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            server = urlunsplit(parts._replace(netloc=netloc))
        shown.append(server)
    return ",".join(shown)


def safe_name(name: str) -> str:
    """A name the JetStream API accepts for streams and consumers.

    ``.``, ``*``, ``>``, path separators, whitespace and control characters become ``_``:
    ``orders.created`` -> ``orders_created``.
    """
    return _UNSAFE.sub("_", name) or "_"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, AuthorizationError) or "authorization" in text.lower():
        return "authorization failed, bad or missing credentials" + (f" ({text})" if text else "")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError) and not text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tls(options: NatsOptions) -> ssl.SSLContext | None:
    if not (options.tls_ca_file or options.tls_cert_file):
        return None
    context = ssl.create_default_context(cafile=options.tls_ca_file)
    if options.tls_cert_file:
        context.load_cert_chain(options.tls_cert_file, options.tls_key_file)
    return context


class FastClient(Client):
    """nats-py's client with faster header handling, byte for byte the stock result.

    The stock client tests every character of every header name in Python on both ends, which
    was most of the cost of a CloudEvent in binary mode (a dozen headers per message). Publishing
    with headers builds the HPUB command in one pass instead; anything unusual (a header value
    with a line break, a header name not seen before, a connection that is not up) takes the stock
    path, which validates, rewrites line breaks and buffers or raises as nats-py does.
    """

    _valid_keys: set[str]
    _direct: dict[int, Direct]
    _answers: dict[str, asyncio.Future[tuple[bytes, dict[str, str] | None]]]
    _answers_prefix: str | None
    _asked: int

    def deliver_directly(self, sub: Subscription, deliver: Direct) -> None:
        """Hand the messages of ``sub`` to ``deliver`` as they are read off the socket.

        Skips nats-py's per-message ``Msg``, its pending queue and its callback task: ``deliver``
        gets the payload and the headers (``None``: none; ``checked``: decoded strictly as
        UTF-8, so no U+FFFD stands for an undecodable byte). It must not block.
        """
        self._direct[sub._id] = deliver

    def forget(self, sub: Subscription) -> None:
        self._direct.pop(sub._id, None)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        deliver = self._direct.get(sid)
        if deliver is None or sid not in self._subs:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        if not headers:
            deliver(subject, data, None, True)
            return
        parsed = _fast_headers(headers)
        if parsed is None:  # a status line, bytes that are not UTF-8, a lone CR or LF
            deliver(subject, data, await self._process_headers(headers), False)
        else:
            deliver(subject, data, parsed, True)

    async def ask(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> tuple[bytes, dict[str, str] | None]:
        """Publish with a reply subject and return the one answer: (payload, headers).

        ``request`` without its per-call costs (a NUID, ``wait_for``, a ``Msg``, the callback
        task): answers come through one wildcard inbox delivered directly, a timer per call.
        Raises nats-py's ``TimeoutError`` when no answer comes within ``timeout``; a
        no-responders status arrives as headers ``{"Status": "503", ...}``.
        """
        if self._answers_prefix is None:
            prefix = self.new_inbox() + "."
            sub = await self.subscribe(prefix + "*")
            self.deliver_directly(sub, self._answered)
            self._answers_prefix = prefix
        self._asked += 1
        token = str(self._asked)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bytes, dict[str, str] | None]] = loop.create_future()
        self._answers[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.publish(subject, payload, self._answers_prefix + token, headers)
            return await future
        finally:
            timer.cancel()
            del self._answers[token]

    def _answered(self, subject: bytes, data: bytes, headers: dict[str, str] | None, checked: bool) -> None:
        token = subject[subject.rfind(b".") + 1 :].decode()
        future = self._answers.get(token)
        if future is not None and not future.done():
            future.set_result((data, headers))

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        if self.publish_now(subject, payload, headers, reply):
            return
        await super().publish(subject, payload, reply, headers)  # validates, rewrites, buffers or raises
        if headers and len(self._valid_keys) < _KEY_CACHE:  # the names passed nats-py's checks
            self._valid_keys.update(k for k in headers if k and k == k.strip())

    def publish_now(self, subject: str, payload: bytes, headers: dict[str, str] | None, reply: str = "") -> bool:
        """Queue a message with headers for the flusher, as ``publish`` would, without awaiting.

        ``False`` when only nats-py's own ``publish`` applies (no headers, names not seen
        before, values it would rewrite, a connection that is not up, a full pending buffer):
        the caller then awaits :meth:`publish`.
        """
        if (
            not headers
            or self._status != Client.CONNECTED
            or not self._valid_keys.issuperset(headers)
            or self._flusher_task is None
            or self._flusher_task.done()
        ):
            return False
        if not self._skip_subject_validation:
            _validate_subject(subject)
            if reply:
                _validate_subject(reply)
        block = "NATS/1.0\r\n" + "".join([f"{k}: {v}\r\n" for k, v in headers.items()]) + "\r\n"
        lines = len(headers) + 2
        if (
            block.count("\n") != lines
            or block.count("\r") != lines
            or ":  " in block  # a value nats-py would strip: leading or trailing blanks
            or " \r" in block
            or "\t" in block
        ):
            return False  # nats-py rewrites these values
        size = len(payload)
        if size > self._max_payload:
            raise MaxPayloadError
        hdr = block.encode()
        n = len(hdr)
        command = b"".join((f"HPUB {subject} {reply} {n} {n + size}\r\n".encode(), hdr, payload, b"\r\n"))
        pending = self._pending_data_size + len(command)
        if 0 < self._max_pending_size < pending:
            return False  # nats-py's publish flushes first
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._pending.append(command)
        self._pending_data_size = pending
        kick = self._flush_queue
        if kick is not None and kick.empty():  # wake the flusher, as nats-py's _flush_pending does
            kick.put_nowait(asyncio.get_running_loop().create_future())
        return True

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        crlf = raw.count(b"\r\n")
        if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
            return _parse_header_lines_slowly(raw)  # a lone CR or LF: the exact line-by-line rules
        try:
            text = raw.decode()
        except UnicodeDecodeError:  # values decoded one by one, with U+FFFD for what is not UTF-8
            return {k.decode("ascii"): v.decode("utf-8", "replace") for k, v in _HEADER_LINE.findall(raw)}
        return _text_headers(text)


# One header line, as nats-py reads it (split at the first colon, name and value stripped of ASCII
# blanks, a name with a blank or a non-ASCII byte inside skipped), for blocks whose only line
# breaks are CRLF. ``.`` stops at LF, so a match never crosses into the next line.
_BLANK = rb"[ \t\x0b\x0c]"
_HEADER_LINE = re.compile(
    rb"^" + _BLANK + rb"*([\x00-\x08\x0e-\x1b!-9;-\x7f]*)" + _BLANK + rb"*:" + _BLANK + rb"*(.*?)" + _BLANK + rb"*\r?$",
    re.M,
)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(NatsTimeoutError())


_HEADER_LINE_TEXT = re.compile(_HEADER_LINE.pattern.decode("latin-1"), re.M)


def _fast_headers(block: bytes) -> dict[str, str] | None:
    """The headers after ``NATS/1.0`` as nats-py reads them, or ``None`` where only its own
    reader applies (a status line, bytes that are not UTF-8, a lone CR or LF).

    """
    if block[8:9] == b" ":
        return None
    try:
        text = block[10:].decode()
    except UnicodeDecodeError:
        return None
    crlf = text.count("\r\n")
    if text.count("\n") != crlf or text.count("\r") != crlf:
        return None
    return _text_headers(text)


def _text_headers(text: str) -> dict[str, str]:
    """Header lines (CRLF only) read as nats-py reads them: split with two C calls in the common
    shape (names seen before, one ``": "`` after each, no blanks to strip), else by regex."""
    if not ("\t" in text or "\x0b" in text or "\x0c" in text or ":  " in text or " \r" in text or text[-1:] == " "):
        try:
            headers = dict([line.split(": ", 1) for line in text.split("\r\n") if line])
        except ValueError:  # a line without ": "
            pass
        else:
            if _KNOWN_NAMES.issuperset(headers):
                return headers
    headers = dict(_HEADER_LINE_TEXT.findall(text))
    if len(_KNOWN_NAMES) < 1024:
        _KNOWN_NAMES.update(name for name in headers if _TOKEN.fullmatch(name))
    return headers


_KNOWN_NAMES: set[str] = set()
"""Header names that are plain tokens (no blank, no colon), learned from the exact reader."""
_TOKEN = re.compile(r"[!-9;-~]+")


def _parse_header_lines_slowly(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        if len(name.split()) > 1 or any(c in _SPACE_LIKE for c in name):  # not a token
            continue
        try:
            key = name.decode("ascii")
        except UnicodeDecodeError:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


_SPACE_LIKE = frozenset(b"\x1c\x1d\x1e\x1f")
"""Bytes that ``str.isspace`` (nats-py's test of a name) counts as blanks but ``bytes.split`` does not."""


_INTERNALS = ("_pending", "_pending_data_size", "_max_pending_size", "_flush_queue", "_flusher_task", "_subs")
_HOOKS = ("_process_msg", "_process_headers", "_parse_header_lines", "_send_command", "_flush_pending")


def new_client() -> Client:
    """A :class:`FastClient` where nats-py has the internals it builds on (tested with 2.16), else
    nats-py's own client: every fast path checks for ``FastClient`` and falls back."""
    nc = FastClient()
    if all(hasattr(nc, name) for name in _INTERNALS) and all(callable(getattr(Client, h, None)) for h in _HOOKS):
        nc._valid_keys, nc._direct = set(), {}
        nc._answers, nc._answers_prefix, nc._asked = {}, None, 0
        return nc
    log.warning("nats-py has changed inside: the mesh uses its stock client, correct but slower")
    return Client()


async def open_connection(
    broker: str,
    url: str | None,
    options: NatsOptions,
    name: str,
    on_reconnect: Callable[[], Awaitable[None]],
) -> Client:
    """A connected client, or :class:`BrokerConnectionError` within ``connect_timeout``."""
    servers = servers_of(url)
    address = display_address(servers)
    nc = new_client()
    errors: list[BaseException] = []
    state = {"connected": False}

    async def error_cb(exc: Exception) -> None:
        if not state["connected"]:
            errors.append(exc)
        elif isinstance(exc, SlowConsumerError):
            log.warning("%s at %s: slow consumer on %s, messages dropped", broker, address, exc.subject)
        else:
            log.debug("%s at %s: %s", broker, address, _reason(exc))

    async def disconnected_cb() -> None:
        if state["connected"] and not nc.is_closed:
            log.warning("%s: connection to %s lost; reconnecting", broker, address)

    async def reconnected_cb() -> None:
        log.info("%s: reconnected to %s", broker, address)
        await on_reconnect()

    kwargs: dict[str, Any] = {
        "servers": servers,
        "name": options.name or name,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        "allow_reconnect": True,
        # Bounded first connect: each server is tried twice, quickly; the real reconnect
        # policy is installed once connected (nats-py reads these options live).
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "connect_timeout": options.connect_timeout,
        "ping_interval": options.ping_interval,
        "max_outstanding_pings": 2,
    }
    if options.user is not None:
        kwargs["user"] = options.user
    if options.password is not None:
        kwargs["password"] = options.password
    if options.token is not None:
        kwargs["token"] = options.token
    if options.creds_file is not None:
        kwargs["user_credentials"] = options.creds_file
    try:
        tls = _tls(options)
        if tls is not None:
            kwargs["tls"] = tls
        await asyncio.wait_for(nc.connect(**kwargs), options.connect_timeout)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
        useful = [e for e in errors if not isinstance(e, NoServersError)]
        # A refused login is often followed by a reset connection: the refusal is the reason.
        refused = [e for e in useful if isinstance(e, AuthorizationError) or "authorization" in str(e).lower()]
        cause = (refused or useful or [exc])[-1]
        if isinstance(exc, asyncio.TimeoutError) and not useful:
            reason = f"no answer within {options.connect_timeout:g}s"
        else:
            reason = _reason(cause)
        raise BrokerConnectionError(broker, address, reason) from exc
    state["connected"] = True
    nc.options["max_reconnect_attempts"] = options.max_reconnect_attempts
    nc.options["reconnect_time_wait"] = options.reconnect_time_wait
    return nc


async def barrier(nc: Client, wait: float) -> None:
    """Return once the server has processed everything sent so far (e.g. a new SUB).

    nats-py 2.16 writes the PING of ``flush()`` straight to the socket, ahead of commands still
    queued for its flusher task, so one ``flush()`` can return before a SUB reached the server.
    The flusher writes the queue before the first PONG can be read; a second PING then follows it.
    """
    seconds = max(1, int(wait))
    await nc.flush(timeout=seconds)
    await nc.flush(timeout=seconds)


async def shut(nc: Client | None, grace: float = 2.0) -> None:
    """Flush what is buffered (acks, publishes) and close within ``grace`` seconds; never raises."""
    if nc is None or nc.is_closed:
        return
    if nc.is_connected:
        with contextlib.suppress(Exception):
            await barrier(nc, grace)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), grace)


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
    return low.startswith("ce-") or low == "content-type"


def read(
    msg: Msg, binding: Binding, topic: str, fallback_id: str | None
) -> tuple[Event | None, WireMessage, DecodeError | None]:
    """The event in a NATS message, or the reason it cannot be read; never raises."""
    return read_parts(msg.data, msg.headers, False, binding, topic, fallback_id)


def read_parts(
    data: bytes,
    headers: dict[str, str] | None,
    checked: bool,
    binding: Binding,
    topic: str,
    fallback_id: str | None = None,
) -> tuple[Event | None, WireMessage, DecodeError | None]:
    """:func:`read` from a payload and its headers (``checked``: no U+FFFD stands for a bad byte)."""
    if headers is None:
        wire = WireMessage(data, _NO_HEADERS, None, None)
    else:
        wire = WireMessage(data, headers, None, headers.get("content-type") or headers.get("Content-Type"))
        if not checked:
            # nats-py decodes header values with errors="replace": U+FFFD in an attribute means
            # the bytes on the wire were not UTF-8.
            for name, value in headers.items():
                if "\ufffd" in value and _suspect(name):
                    return (
                        None,
                        wire,
                        DecodeError(f"header {name!r} is not UTF-8", bytes(data), dict(headers)),
                    )
    try:
        return decode(wire, binding, topic, fallback_id), wire, None
    except DecodeError as exc:
        return None, wire, exc
