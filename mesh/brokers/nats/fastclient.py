"""The mesh's NATS clients: nats-py's own, guarded, and a faster one built on its internals.

=================  ========================================================================
client             when
=================  ========================================================================
:class:`FastClient`  ``fast_client: true`` (the default) and a nats-py version in
                   :data:`TESTED_VERSIONS` that has every internal it builds on
:class:`SafeClient`  otherwise: nats-py's own client, correct but slower (an untested version
                   says so in one warning line when the connection is made)
=================  ========================================================================

Both hand on a header block nats-py cannot read (a status line that is not UTF-8 raises
``UnicodeDecodeError`` inside its reader, which would stop reading for a while) as the one header
:data:`~mesh.brokers.nats.messages.UNDECODABLE`: the message arrives as undecodable, the reader
goes on. Only this module relies on nats-py's internals.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from nats.aio import client as _nats_client
from nats.aio.client import Client

try:
    from nats.aio.client import _validate_subject
except ImportError:  # a nats-py without it: the same rule (no blank, no line break)

    def _validate_subject(subject: str, *, strict: bool = False) -> None:
        if not subject or re.search(r"[ \t\r\n]", subject):
            raise BadSubjectError


from nats.aio.subscription import Subscription
from nats.errors import BadSubjectError, MaxPayloadError
from nats.errors import TimeoutError as NatsTimeoutError

from mesh.brokers.nats.messages import undecodable

__all__ = ["TESTED_VERSIONS", "Direct", "FastClient", "SafeClient", "new_client"]

log = logging.getLogger("mesh.broker.nats")

TESTED_VERSIONS: tuple[str, ...] = ("2.16.0",)
"""nats-py versions :class:`FastClient` was tested with (its internals are theirs)."""

_KEY_CACHE = 1_000
"""Header names remembered as valid (per connection) so the fast publish path skips nats-py's checks."""

Direct = Callable[[bytes, bytes, "dict[str, str] | None", bool], None]
"""Takes one message of a subscription delivered directly: subject, payload, headers, headers checked."""


class SafeClient(Client):
    """nats-py's own client; a header block it cannot read arrives as undecodable instead of
    stopping its reader."""

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        try:
            parsed: dict[str, str] | None = await super()._process_headers(headers)
        except Exception as exc:  # e.g. UnicodeDecodeError on a status description
            return undecodable(exc)
        return parsed


class FastClient(SafeClient):
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
        """Stop delivering ``sub`` directly: what still arrives takes nats-py's own path."""
        self._direct.pop(sub._id, None)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        deliver = self._direct.get(sid)
        if deliver is None or sid not in self._subs:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            if not headers:
                deliver(subject, data, None, True)
                return
            parsed = _fast_headers(headers)
            if parsed is None:  # a status line, bytes that are not UTF-8, a lone CR or LF
                deliver(subject, data, await super()._process_headers(headers), False)
            else:
                deliver(subject, data, parsed, True)
        except Exception:  # never into nats-py's reader, which would stop reading
            log.exception("nats: a message on %r could not be handed on; reading goes on", subject)

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        """Headers for nats-py's own path (JetStream pulls, callbacks): the fast reader where it applies."""
        if not headers:
            return None
        parsed = _fast_headers(headers)
        if parsed is None:
            return await super()._process_headers(headers)
        return parsed or None

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


def nats_py_version() -> str:
    """The installed nats-py version ("unknown" if it does not say)."""
    return str(getattr(_nats_client, "__version__", "unknown"))


def new_client(fast: bool = True) -> SafeClient:
    """A :class:`FastClient` when ``fast`` and nats-py is a tested version with the internals it
    builds on, else a :class:`SafeClient` (with one warning line when nats-py is the reason).

    Every fast path checks for ``FastClient`` and falls back.
    """
    if not fast:
        return SafeClient()
    version = nats_py_version()
    nc = FastClient()
    if (
        version in TESTED_VERSIONS
        and all(hasattr(nc, name) for name in _INTERNALS)
        and all(callable(getattr(Client, h, None)) for h in _HOOKS)
    ):
        nc._valid_keys, nc._direct = set(), {}
        nc._answers, nc._answers_prefix, nc._asked = {}, None, 0
        return nc
    log.warning(
        "nats-py %s is not a version the mesh's fast client was tested with (%s): "
        "using nats-py's own client, correct but slower",
        version,
        ", ".join(TESTED_VERSIONS),
    )
    return SafeClient()
