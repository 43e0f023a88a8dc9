"""The connection of the Redis Streams adapter: the client, the group script and what every part needs.

One :class:`RedisConnection` per broker. The consumer, ephemeral subscriptions, history and
group delivery take it (never the broker class) and use only its public members:

==================  ==========================================================================
member              what
==================  ==========================================================================
``settings``        the validated :class:`~mesh.brokers.redis.options.RedisOptions`
``namespace``,      the key prefix; ``name_of(topic)`` is the stream key of a topic
``name_of``
``wire``            the binding in the configured content mode (what ``encode`` writes)
``client_id``       the default prefix of consumer names
``address``         the URL with its secrets masked (:func:`mesh.urls.mask_url`), for messages
``execute``         ``execute_command`` of the connected client (one lookup on the hot path);
                    raises :class:`BrokerError` "not connected" before ``open()``
``script``          the group script (:mod:`.script`, EVALSHA, loaded again on NOSCRIPT)
``trim``            the ``MAXLEN`` arguments of every XADD to a topic's stream
``xadd``            send one XADD, coalesced into a pipeline with concurrent commands
``call``            send any non-blocking command the same way (acks, claims, group creation)
``run_script``      EVALSHA the group script through ``call`` (one pipeline for many streams)
``ensure_stream``   create an empty stream (no entry, no group) unless one exists
``error``,          the one place the adapter's error texts are made
``publish_error``
==================  ==========================================================================

Security: ``broker.tls`` makes every connection TLS (whatever the URL's scheme) with the context
built by :func:`mesh.brokers.tls.ssl_context`; ``broker.auth`` username/password override the
``username``/``password`` options, which override the URL's.

Commands are coalesced: while one (an XADD, an XACK, a script call) is on the wire, the next
ones queue and go together as one pipeline (one round trip) when it returns; each caller still
gets its own outcome. So a thousand subscriptions acking or claiming at once cost a few round
trips on one connection, not a thousand connections.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from mesh.brokers.base import failures_of
from mesh.brokers.redis.options import RedisOptions
from mesh.brokers.redis.script import SCRIPT
from mesh.brokers.tls import AuthOptions, TlsOptions, ssl_context, tls_hint
from mesh.codecs.binary import Binding
from mesh.errors import BrokerConnectionError, BrokerError, PublishError
from mesh.extensions import GROUP_MARK
from mesh.urls import mask_url

__all__ = ["DEFAULT_URL", "GROUP_FIELD", "PIPELINE_MAX", "RedisConnection", "text"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
PIPELINE_MAX = 1000
"""Most commands sent in one pipeline when concurrent commands are coalesced."""
GROUP_FIELD = GROUP_MARK.encode()
"""The entry field naming the one group a replayed entry is for (see :mod:`.groups`)."""


def text(value: Any) -> str:
    """A reply value (bytes or not) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class _TlsConnection(SSLConnection):
    """A redis-py TLS connection that uses the mesh's own context (CA, client certificate, minimum version)."""

    def __init__(self, *, mesh_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context.context = mesh_context  # RedisSSLContext.get() returns it as built


class RedisConnection:
    """The client of one Redis broker and what its parts need (see the module docstring)."""

    def __init__(
        self,
        url: str | None,
        settings: RedisOptions,
        *,
        namespace: str,
        wire: Binding,
        client_id: str,
        tls: TlsOptions | None = None,
        auth: AuthOptions | None = None,
    ) -> None:
        self.url = url or DEFAULT_URL
        self.tls = tls
        self.context = None if tls is None else ssl_context(tls, "redis")
        self.auth = auth
        self.settings = settings
        self.namespace = namespace
        self.wire = wire
        self.client_id = client_id
        self.address = mask_url(self.url)
        self.client: Redis | None = None
        self.script: Any = None
        self.sha = ""
        """The SHA1 of the group script (loaded at ``open()``, again after a NOSCRIPT)."""
        self.execute: Callable[..., Awaitable[Any]] = self._not_connected
        """``execute_command`` of the connected client (one attribute lookup on the hot path)."""
        self.trim: tuple[Any, ...] = ()
        if settings.maxlen is not None:
            self.trim = ("MAXLEN", "~", settings.maxlen) if settings.approximate_trim else ("MAXLEN", settings.maxlen)
        self._sending = False  # a publish (or a pipeline of them) is on the wire
        self._queue: list[tuple[Sequence[Any], asyncio.Future[Any]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    def name_of(self, topic: str) -> str:
        """The stream key of a topic (the namespace prefix applied)."""
        return self.namespace + topic if self.namespace else topic

    @property
    def connected(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` was not called since."""
        return self.client is not None

    def require_client(self) -> Redis:
        """The connected client (raises :class:`BrokerError` before ``open()``)."""
        if self.client is None:
            raise self.not_connected()
        return self.client

    def not_connected(self) -> BrokerError:
        """The error of a call made while not connected."""
        return BrokerError(f"the redis broker at {self.address} is not connected")

    async def _not_connected(self, *args: Any) -> Any:
        raise self.not_connected()

    def error(self, what: str, exc: BaseException) -> BrokerError:
        """A :class:`BrokerError` saying what failed on this server and why."""
        return BrokerError(f"redis at {self.address}: {what}{': ' if what else ''}{exc}")

    def publish_error(self, stream: str, exc: BaseException) -> PublishError:
        """The :class:`PublishError` of an XADD to ``stream`` that failed."""
        return PublishError(f"redis at {self.address} did not take the event for {stream!r}: {exc}")

    # -- connect / close ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, authenticate and PING within ``connect_timeout`` (or BrokerConnectionError)."""
        if self.client is not None:
            return
        opts = self.settings
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": opts.connect_timeout,
            "socket_timeout": opts.socket_timeout,
            # a pooled connection the server closed (a restart) is replaced and the command sent
            # again, twice at most: at-least-once publishing allows the rare duplicate this may make
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            "retry_on_error": [RedisConnectionError],
        }
        if opts.username is not None:
            kwargs["username"] = opts.username
        if opts.password is not None:
            kwargs["password"] = opts.password
        try:
            # concurrent publishes are coalesced into pipelines on one connection (see xadd);
            # every subscription holds a connection of its own while it blocks
            pool = ConnectionPool.from_url(self.url, max_connections=2**31, **kwargs)
            self._secure(pool)
            client = Redis.from_pool(pool)
        except ValueError as exc:
            raise BrokerConnectionError("redis", self.address, f"invalid URL: {exc}") from exc
        try:
            await asyncio.wait_for(client.ping(), opts.connect_timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            reason = (
                f"no answer within {opts.connect_timeout:g}s"
                if isinstance(exc, TimeoutError) and not str(exc)
                else f"{type(exc).__name__}: {exc}"
            )
            reason += tls_hint(self.tls, reason)
            raise BrokerConnectionError("redis", self.address, reason) from exc
        try:
            self.sha = text(await client.script_load(SCRIPT))
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise BrokerConnectionError("redis", self.address, f"cannot load the group script: {exc}") from exc
        self.client = client
        self.script = client.register_script(SCRIPT)
        self.execute = cast(Callable[..., Awaitable[Any]], client.execute_command)

    def _secure(self, pool: ConnectionPool) -> None:
        """Apply ``broker.tls`` and ``broker.auth`` to the pool (after the URL's own settings: they win)."""
        extra = pool.connection_kwargs
        if self.auth is not None and self.auth.username is not None:
            extra["username"] = self.auth.username
        if self.auth is not None and self.auth.password is not None:
            extra["password"] = self.auth.password.get_secret_value()
        if self.context is not None:
            pool.connection_class = _TlsConnection
            extra["mesh_context"] = self.context

    async def close(self) -> None:
        """Let publishes riding a pipeline finish, then disconnect."""
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)
        client, self.client = self.client, None
        self.execute = self._not_connected
        if client is not None:
            await client.aclose()

    # -- streams --------------------------------------------------------------------------------

    async def ensure_stream(self, stream: str) -> None:
        """Create ``stream`` empty (no entry, no group) unless it exists; a key of another type is an error."""
        try:
            kind = await self.script(keys=(stream, stream), args=("", "", "ensure"), client=self.require_client())
        except (RedisError, OSError) as exc:
            raise BrokerError(f"cannot create stream {stream!r} on redis at {self.address}: {exc}") from exc
        kind = text(kind)
        if kind != "stream":
            raise BrokerError(f"redis key {stream!r} exists and is a {kind}, not a stream")

    # -- publishing -----------------------------------------------------------------------------

    async def xadd(self, stream: str, args: list[Any]) -> None:
        """Send one XADD, or ride the next pipeline when another command is on the wire."""
        try:
            await self.call(*args)
        except (RedisError, OSError, BrokerError) as exc:
            raise self.publish_error(stream, exc) from exc

    async def call(self, *args: Any) -> Any:
        """Send one (non-blocking) command and return its reply; while another is on the wire, it
        rides the next pipeline with every command queued meanwhile (one round trip for all).

        Errors come back as the client raised them (``RedisError``, ``OSError``), or
        :class:`BrokerError` when not connected.
        """
        if self._sending or self._queue:
            return await self._enqueue(args)  # another command is on the wire: ride the next pipeline
        self._sending = True
        try:
            return await self.execute(*args)
        finally:
            self._sending = False
            if self._queue:
                self._start_flusher()

    async def run_script(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA the group script (:mod:`.script`) through :meth:`call`; loaded again after a
        NOSCRIPT (a restarted or flushed server)."""
        try:
            return await self.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.sha = text(await self.call("SCRIPT", "LOAD", SCRIPT))
            return await self.call("EVALSHA", self.sha, len(keys), *keys, *args)

    async def xadd_many(self, commands: list[list[Any]]) -> dict[int, Exception]:
        """Send many XADDs in pipelines (after any publish already queued); failures by index."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for args in commands:
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append((args, future))
            futures.append(future)
        if not self._sending:
            self._start_flusher()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        return failures_of(outcomes)

    async def _enqueue(self, args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        if not self._sending:
            self._start_flusher()
        return await future

    def _start_flusher(self) -> None:
        self._sending = True
        task = asyncio.get_running_loop().create_task(self._flush_queue())
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush_queue(self) -> None:
        """Send queued commands as pipelines (one round trip each) until the queue is empty."""
        try:
            while self._queue:
                batch = self._queue[:PIPELINE_MAX]
                del self._queue[:PIPELINE_MAX]
                try:
                    pipe = self.require_client().pipeline(transaction=False)
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    results = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError, BrokerError) as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=False):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._sending = False
