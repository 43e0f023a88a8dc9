"""The connection of one NATS or JetStream broker: the client and what every part needs of it.

:class:`NatsConnection` is what consumers, ephemeral subscriptions, one-group delivery and
history take (never the broker): the settings, the namespace (:meth:`~NatsConnection.name_of`),
the binding ``wire``, the client id, the client itself (:meth:`~NatsConnection.client`) and the
helpers they share (:meth:`~NatsConnection.barrier`, :meth:`~NatsConnection.unsubscribe`).

==========================  ====================================================================
moment                      behaviour
==========================  ====================================================================
first connection            every server of the URL is tried (twice) within ``connect_timeout``;
                            a failure is one :class:`~mesh.errors.BrokerConnectionError`
connected                   the client reconnects on its own (``max_reconnect_attempts``, -1:
                            forever) and restores its subscriptions; ``on_reconnect`` is awaited
lost / back                 one warning / info line naming the servers
not connected               :meth:`~NatsConnection.client` raises the caller's error type
==========================  ====================================================================

Addresses in errors and logs go through :func:`mesh.urls.mask_url`: a password, or a token in
the user part (``nats://TOKEN@host``), is never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import AuthorizationError, NoServersError, SlowConsumerError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from mesh.brokers.nats.fastclient import FastClient, new_client
from mesh.brokers.nats.options import NatsOptions
from mesh.brokers.tls import AuthOptions, TlsOptions, ssl_context, tls_hint
from mesh.codecs.binary import Binding
from mesh.errors import BrokerConnectionError, BrokerError
from mesh.urls import mask_url

__all__ = ["DEFAULT_URL", "NatsConnection", "servers_of"]

log = logging.getLogger("mesh.broker.nats")

DEFAULT_URL = "nats://127.0.0.1:4222"


def servers_of(url: str | None) -> list[str]:
    """The server URLs of a ``nats://`` URL or comma-separated list of them."""
    servers = [part.strip() for part in (url or DEFAULT_URL).split(",") if part.strip()]
    return [s if "://" in s else f"nats://{s}" for s in servers] or [DEFAULT_URL]


class NatsConnection:
    """The client of one broker plus what its parts need (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        url: str | None,
        settings: NatsOptions,
        wire: Binding,
        *,
        namespace: str = "",
        client_id: str = "mesh",
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
        tls: TlsOptions | None = None,
        auth: AuthOptions | None = None,
    ) -> None:
        self.kind = kind
        self.tls = tls
        """``broker.tls`` (wins over the ``tls_*_file`` options)."""
        self.auth = auth
        """``broker.auth`` (wins over the ``user``/``password``/``token``/``creds_file`` options)."""
        self.settings = settings
        self.wire = wire
        self.namespace = namespace
        self.client_id = client_id
        self.servers = servers_of(url)
        self.address = mask_url(",".join(self.servers))
        """The servers for messages, credentials masked."""
        self.nc: Client | None = None
        """The client while connected (a :class:`FastClient` where it applies)."""
        self._on_reconnect = on_reconnect
        self._js: JetStreamContext | None = None

    def name_of(self, topic: str) -> str:
        """The subject of a topic (the namespace prefix applied)."""
        return self.namespace + topic if self.namespace else topic

    def not_connected(self, error: Callable[[str], BrokerError] = BrokerError) -> BrokerError:
        """The error for a call made before ``connect()`` or after ``close()``."""
        return error(f"the {self.kind} broker at {self.address} is not connected: call connect() first")

    def client(self, error: Callable[[str], BrokerError] = BrokerError) -> Client:
        """The connected client, or ``error`` saying it is not connected."""
        nc = self.nc
        if nc is None or nc.is_closed:
            raise self.not_connected(error)
        return nc

    def fast(self) -> FastClient | None:
        """The client where it is a :class:`FastClient` (direct delivery, fast requests)."""
        nc = self.nc
        return nc if isinstance(nc, FastClient) else None

    def jetstream(self) -> JetStreamContext:
        """The JetStream API of the connected client (its timeout is ``publish_timeout``)."""
        nc = self.client()
        if self._js is None:
            self._js = nc.jetstream(timeout=getattr(self.settings, "publish_timeout", 5.0))
        return self._js

    @property
    def connected(self) -> bool:
        """Whether a client is open (it may be reconnecting)."""
        return self.nc is not None and not self.nc.is_closed

    async def open(self) -> None:
        """Connect within ``connect_timeout`` or raise :class:`BrokerConnectionError`."""
        if self.connected:
            return
        self.nc = await self._connect()
        self._js = None

    async def close(self, grace: float = 2.0) -> None:
        """Flush what is buffered (acks, publishes) and close within ``grace`` seconds; never raises."""
        nc, self.nc, self._js = self.nc, None, None
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            with contextlib.suppress(Exception):
                await _barrier(nc, grace)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), grace)

    async def barrier(self) -> None:
        """Return once the server has processed everything sent so far (e.g. a new SUB)."""
        await _barrier(self.client(), self.settings.connect_timeout)

    async def unsubscribe(self, nsub: Subscription) -> None:
        """UNSUB, then wait (within ``connect_timeout``) until what had arrived reached the callback."""
        fast = self.fast()
        if fast is not None:
            fast.forget(nsub)  # what still arrives takes nats-py's path, which the drain waits for
        try:
            await asyncio.wait_for(nsub.drain(), self.settings.connect_timeout)  # type: ignore[no-untyped-call]
        except (TimeoutError, NatsError):
            with contextlib.suppress(NatsError):
                await nsub.unsubscribe()

    def _common_auth(self, kwargs: dict[str, Any]) -> None:
        """``broker.auth`` as nats-py's connect arguments (secrets unwrapped only here)."""
        auth = self.auth
        if auth is None:
            return
        if auth.username is not None:
            kwargs["user"] = auth.username
        if auth.password is not None:
            kwargs["password"] = auth.password.get_secret_value()
        if auth.token is not None:
            kwargs["token"] = auth.token.get_secret_value()
        if auth.creds_file is not None:
            kwargs["user_credentials"] = auth.creds_file
        if auth.nkey_seed is not None:
            seed = auth.nkey_seed.get_secret_value()
            kwargs["nkeys_seed_str" if seed.startswith("SU") else "nkeys_seed"] = seed

    async def _connect(self) -> Client:
        settings, kind, address = self.settings, self.kind, self.address
        nc = new_client(settings.fast_client)
        errors: list[BaseException] = []
        state = {"connected": False}

        async def error_cb(exc: Exception) -> None:
            if not state["connected"]:
                errors.append(exc)
            elif isinstance(exc, SlowConsumerError):
                log.warning("%s at %s: slow consumer on %s, messages dropped", kind, address, exc.subject)
            else:
                log.debug("%s at %s: %s", kind, address, _reason(exc))

        async def disconnected_cb() -> None:
            if state["connected"] and not nc.is_closed:
                log.warning("%s: connection to %s lost; reconnecting", kind, address)

        async def reconnected_cb() -> None:
            log.info("%s: reconnected to %s", kind, address)
            if self._on_reconnect is not None:
                await self._on_reconnect()

        kwargs: dict[str, Any] = {
            "servers": self.servers,
            "name": settings.name or self.client_id,
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
            "allow_reconnect": True,
            # Bounded first connect: each server is tried twice, quickly; the real reconnect
            # policy is installed once connected (nats-py reads these options live).
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.1,
            "connect_timeout": settings.connect_timeout,
            "ping_interval": settings.ping_interval,
            "max_outstanding_pings": 2,
        }
        if settings.user is not None:
            kwargs["user"] = settings.user
        if settings.password is not None:
            kwargs["password"] = settings.password
        if settings.token is not None:
            kwargs["token"] = settings.token
        if settings.creds_file is not None:
            kwargs["user_credentials"] = settings.creds_file
        self._common_auth(kwargs)
        try:
            tls = ssl_context(self.tls, kind) if self.tls is not None else _tls(settings)
            if tls is not None:
                kwargs["tls"] = tls
                host = urlsplit(self.servers[0]).hostname if self.servers else None
                if self.tls is not None and host:
                    kwargs["tls_hostname"] = host
            await asyncio.wait_for(nc.connect(**kwargs), settings.connect_timeout)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
            useful = [e for e in errors if not isinstance(e, NoServersError)]
            # A refused login is often followed by a reset connection: the refusal is the reason.
            refused = [e for e in useful if isinstance(e, AuthorizationError) or "authorization" in str(e).lower()]
            cause = (refused or useful or [exc])[-1]
            if isinstance(exc, asyncio.TimeoutError) and not useful:
                reason = f"no answer within {settings.connect_timeout:g}s"
            else:
                reason = _reason(cause)
            raise BrokerConnectionError(kind, address, reason + tls_hint(self.tls, reason)) from exc
        state["connected"] = True
        nc.options["max_reconnect_attempts"] = settings.max_reconnect_attempts
        nc.options["reconnect_time_wait"] = settings.reconnect_time_wait
        return nc


async def _barrier(nc: Client, wait: float) -> None:
    """nats-py 2.16 writes the PING of ``flush()`` straight to the socket, ahead of commands still
    queued for its flusher task, so one ``flush()`` can return before a SUB reached the server.
    The flusher writes the queue before the first PONG can be read; a second PING then follows it.
    """
    seconds = max(1, int(wait))
    await nc.flush(timeout=seconds)
    await nc.flush(timeout=seconds)


def _reason(exc: BaseException) -> str:
    text = mask_url(str(exc).strip())  # nats-py may name the server with its credentials
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
