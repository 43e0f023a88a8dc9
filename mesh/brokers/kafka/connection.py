"""The connection of the Kafka adapter: the clients, the settings and the helpers its parts share.

A :class:`KafkaConnection` owns the producer and the admin client of one broker, and is what
the parts (subscriptions, ephemeral subscriptions, history, group delivery) take instead of the
broker. It also holds the one copy of the steps they all need:

===========================  =========================================================================
member                       what
===========================  =========================================================================
``settings``, ``wire``       the validated options and the binding in its content mode
``name_of``                  a mesh topic to its Kafka topic (the namespace applied)
``retry_topic``              ``_mesh.retry.<group>.<topic>``, made legal and kept distinct
``consumer(**kw)``           a new, unstarted consumer with the connection's client settings
``open`` / ``close``         start (bounded by ``connect_timeout``) and stop producer and admin client
``ensure`` / ``topics``      create a topic (cached); list the cluster's topics
``exists`` / ``drop``        is a topic there (ephemeral publishes); delete an exclusive one
``send``                     write one record; returns once the cluster has it
``record_of``                an event as a record's value, key and headers
``read_record``              a fetched record to an event or a :class:`DecodeError`, never raising
``salvage``, ``unreadable``  a record that cannot be read: its raw bytes and a :class:`DecodeError`
``reason``, ``quietly``      a client error as one line; a close step that may fail
===========================  =========================================================================

Security: ``broker.tls`` and ``broker.auth`` (:mod:`mesh.brokers.tls`), when either is set,
replace the ``security_protocol``/``ssl_*``/``sasl_*`` options: TLS alone is ``SSL``, a user name
adds SASL (``SASL_SSL``, or ``SASL_PLAINTEXT`` without ``tls``).

Header values of a Kafka record may be ``None`` (a null header). The reads done here and in
the parts (``content-type``, the retry headers) treat such a value as absent; the codec gets the
headers as fetched (no copy on the hot path), and a record that still cannot be read becomes an
undecodable delivery through :func:`salvage`, whose raw headers leave the null values out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.helpers import create_ssl_context

from mesh.brokers.base import RESERVED_PREFIX
from mesh.brokers.kafka.options import KafkaOptions
from mesh.brokers.tls import AuthOptions, TlsOptions, ssl_context, tls_hint
from mesh.codecs.binary import Binding, WireMessage, decode, encode
from mesh.errors import BrokerConnectionError, BrokerError, ConfigError, DecodeError, PublishError
from mesh.event import Event
from mesh.urls import mask_url

__all__ = [
    "ATTEMPT_HEADER",
    "CONTENT_TYPE",
    "DUE_HEADER",
    "ORIGIN_HEADER",
    "KafkaConnection",
    "parse_servers",
    "quietly",
    "read_record",
    "reason",
    "record_of",
    "salvage",
    "unreadable",
]

log = logging.getLogger("mesh.broker.kafka")

CONTENT_TYPE = "content-type"
ORIGIN_HEADER = RESERVED_PREFIX + "origin"
"""``topic:partition:offset`` of the first delivery: a stable id for wrapped legacy messages."""
DUE_HEADER = RESERVED_PREFIX + "due"
"""Epoch milliseconds when a retry copy may be delivered."""
ATTEMPT_HEADER = RESERVED_PREFIX + "attempt"
"""The attempt number the retry copy is delivered with."""
TOPIC_EXISTS = 36
"""Kafka's error code for creating a topic that exists (fine: ensure means 'exists after')."""
ABSENT_RECHECK = 1.0
"""Seconds an ephemeral publish trusts that a topic does not exist before asking again."""
DEFAULT_URL = "127.0.0.1:9092"
_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")

Headers = list[tuple[str, bytes]]


def parse_servers(url: str | None) -> list[str]:
    """``host:port[,host:port]`` (optionally ``kafka://``-prefixed) to a bootstrap list."""
    text = (url or DEFAULT_URL).strip()
    servers = []
    for item in text.split(","):
        item = item.strip()
        if item[:8].lower() == "kafka://":
            item = item[8:]
        item = item.rstrip("/")
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
            raise ValueError(f"{mask_url('kafka://' + item)[8:]!r} is not host:port")
        servers.append(item)
    return servers


def reason(exc: BaseException, timeout: float | None = None) -> str:
    """A client error as one short line for a mesh error message."""
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"no answer within {timeout:g}s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


CLOSE_TIMEOUT = 10.0
"""Seconds a close step may take (aiokafka's consumer stop waits for fetches in flight)."""


async def quietly(aw: Any, timeout: float = CLOSE_TIMEOUT) -> None:
    """Await a close step for at most ``timeout`` seconds; log and forget its failure (a
    ``CancelledError`` the client raises from inside, as aiokafka's fetcher can while it closes,
    included: only a cancellation of the calling task goes on)."""
    try:
        async with asyncio.timeout(timeout):
            await aw
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("kafka close step was cancelled inside the client")
    except Exception as exc:  # best effort while closing
        log.debug("kafka close step failed: %s", exc)


def record_of(event: Event, wire: Binding) -> tuple[bytes, bytes | None, Headers]:
    """An event as a Kafka record's value, key and headers (``content-type`` among them)."""
    msg = encode(event, wire)
    headers = [(k, v.encode() if type(v) is str else v) for k, v in msg.headers.items()]
    if msg.content_type is not None:
        headers.append((CONTENT_TYPE, msg.content_type.encode()))
    return msg.body, None if msg.key is None else msg.key.encode(), headers  # type: ignore[return-value]


def read_record(
    record: Any, wire: Binding, topic: str, fallback_id: str, key: bool = True
) -> tuple[Event | None, WireMessage, DecodeError | None]:
    """A fetched record as (event, raw message, error); never raises, whatever the record holds.

    ``key`` says whether the record key becomes the message key (a wrapped legacy message's
    subject). The consume loop of :mod:`.consumer` does the same steps inline (its hot path).
    """
    try:
        headers = dict(record.headers)
        ctype = headers.get(CONTENT_TYPE)
        if ctype is not None:
            ctype = ctype.decode()
        raw_key = record.key if key else None
        text_key = None if raw_key is None else raw_key.decode("utf-8", "replace")
        msg = WireMessage(record.value or b"", headers, text_key, ctype)
        try:
            return decode(msg, wire, topic, fallback_id), msg, None
        except DecodeError as exc:
            return None, msg, exc
    except UnicodeDecodeError:
        return None, *salvage(record, "content-type header is not UTF-8")
    except Exception as exc:  # a record no reader expected: undecodable, never fatal
        return None, *unreadable(record, exc)


def salvage(record: Any, why: str) -> tuple[WireMessage, DecodeError]:
    """A record that cannot be read as its raw message and a :class:`DecodeError`; never raises.

    Null header values are left out (absent), so whoever reads the raw headers later (the
    dead-letter plugin) finds bytes only.
    """
    value = getattr(record, "value", None)
    value = value if isinstance(value, bytes) else b""
    try:
        headers = {k: v for k, v in getattr(record, "headers", ()) if isinstance(k, str) and isinstance(v, bytes)}
    except Exception:  # not even a list of pairs
        headers = {}
    try:
        ctype = headers[CONTENT_TYPE].decode() if CONTENT_TYPE in headers else None
    except UnicodeDecodeError:
        ctype = None
    key = getattr(record, "key", None)
    key = key if isinstance(key, bytes) else None
    msg = WireMessage(value, headers, None if key is None else key.decode("utf-8", "replace"), ctype)
    shown = {k: v.decode("utf-8", "replace") for k, v in headers.items()}
    return msg, DecodeError(why, value, shown)


def unreadable(record: Any, exc: BaseException) -> tuple[WireMessage, DecodeError]:
    """:func:`salvage` for an unexpected failure while reading a record; logs it (once, here)."""
    where = f"{getattr(record, 'topic', '?')}:{getattr(record, 'partition', '?')}:{getattr(record, 'offset', '?')}"
    log.warning("kafka record %s cannot be read, handed on as undecodable: %s", where, reason(exc), exc_info=exc)
    return salvage(record, f"unreadable record: {reason(exc)}")


class KafkaConnection:
    """The producer and admin client of one Kafka broker, and what its parts need from it."""

    def __init__(
        self,
        url: str | None,
        settings: KafkaOptions,
        wire: Binding,
        namespace: str,
        client_id: str,
        *,
        tls: TlsOptions | None = None,
        auth: AuthOptions | None = None,
    ) -> None:
        self.url = url
        self.tls = tls
        """``broker.tls`` (it wins over the ``ssl_*`` options)."""
        self.context: ssl.SSLContext | None = None if tls is None else ssl_context(tls, "kafka")
        self.auth = auth
        """``broker.auth`` (it wins over the ``sasl_*`` options)."""
        self.settings = settings
        self.wire = wire
        self.namespace = namespace
        self.client_id = settings.client_id or client_id
        """The client id sent to the cluster (the option, else the app's id)."""
        self.address = mask_url(url or DEFAULT_URL)
        """The bootstrap address as shown in logs and errors (credentials masked)."""
        self.servers: list[str] = []
        self.producer: AIOKafkaProducer | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.known: set[str] = set()
        """Topics known to exist (created or seen by this connection)."""
        self._create_lock = asyncio.Lock()
        self._absent: dict[str, float] = {}

    # -- names -----------------------------------------------------------------------------------

    def name_of(self, topic: str) -> str:
        """The Kafka topic of a mesh topic (the namespace prefix applied)."""
        return self.namespace + topic if self.namespace else topic

    def retry_topic(self, topic: str, group: str) -> str:
        """The retry topic of one group's subscription to a topic (under the reserved prefix)."""
        raw = self.name_of(f"{RESERVED_PREFIX}retry.{group}.{topic}")
        name = _ILLEGAL.sub("_", raw)
        if name != raw or len(name) > 200:  # keep distinct names distinct, within Kafka's 249
            name = f"{name[:200]}.{hashlib.sha1(raw.encode()).hexdigest()[:12]}"
        return name

    # -- clients ---------------------------------------------------------------------------------

    def client_config(self) -> dict[str, Any]:
        """The settings every client of this connection shares (servers, id, security)."""
        o = self.settings
        if self.tls is not None or self.auth is not None:
            return self._secure_config()
        config: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "request_timeout_ms": o.request_timeout_ms,
            "security_protocol": o.security_protocol,
        }
        if o.security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = o.sasl_mechanism
            config["sasl_plain_username"] = o.sasl_username
            config["sasl_plain_password"] = o.sasl_password.get_secret_value() if o.sasl_password else None
        if o.security_protocol.endswith("SSL"):
            config["ssl_context"] = create_ssl_context(
                cafile=o.ssl_cafile, certfile=o.ssl_certfile, keyfile=o.ssl_keyfile
            )
        return config

    def _secure_config(self) -> dict[str, Any]:
        """:meth:`client_config` from ``broker.tls``/``broker.auth``: SSL, SASL_SSL or SASL_PLAINTEXT."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.settings.request_timeout_ms,
        }
        sasl = self.auth is not None and self.auth.username is not None
        protocol = ("SASL_" if sasl else "") + ("SSL" if self.tls is not None else "PLAINTEXT")
        config["security_protocol"] = protocol
        if self.context is not None:
            config["ssl_context"] = self.context
        if sasl and self.auth is not None:
            config["sasl_mechanism"] = self.auth.mechanism or "PLAIN"
            config["sasl_plain_username"] = self.auth.username
            config["sasl_plain_password"] = self.auth.password.get_secret_value() if self.auth.password else None
        return config

    def consumer(self, **options: Any) -> AIOKafkaConsumer:
        """A new consumer (not started) with this connection's client settings plus ``options``."""
        return AIOKafkaConsumer(**self.client_config(), **options)

    async def open(self, partitioner: Any) -> AIOKafkaProducer:
        """Start the producer and the admin client within ``connect_timeout``; returns the producer."""
        if self.producer is not None:
            return self.producer
        try:
            self.servers = parse_servers(self.url)
        except ValueError as exc:
            raise BrokerConnectionError("kafka", self.address, f"bad url: {exc}") from None
        o = self.settings
        common = self.client_config()
        try:
            producer = AIOKafkaProducer(
                **common,
                acks=o.acks,
                compression_type=None if o.compression == "none" else o.compression,
                linger_ms=o.linger_ms,
                max_batch_size=o.max_batch_size,
                max_request_size=o.max_request_size,
                enable_idempotence=False,
                partitioner=partitioner,
            )
        except RuntimeError as exc:  # a compression library is missing
            raise ConfigError([("broker.options.compression", str(exc))]) from None
        admin = AIOKafkaAdminClient(**common)
        try:
            async with asyncio.timeout(o.connect_timeout):
                await producer.start()
                await admin.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await quietly(producer.stop())
            await quietly(admin.close())
            why = reason(exc, o.connect_timeout)
            if self.context is not None and isinstance(exc, KafkaError):
                why += await self._tls_probe()  # aiokafka logs the TLS failure but raises "unable to bootstrap"
            raise BrokerConnectionError("kafka", self.address, why + tls_hint(self.tls, why)) from exc
        self.producer, self.admin = producer, admin
        return producer

    async def _tls_probe(self) -> str:
        """Why a TLS handshake with the first bootstrap server fails ("" if it does not)."""
        host, _, port = self.servers[0].rpartition(":")
        writer = None
        try:
            async with asyncio.timeout(3.0):
                reader, writer = await asyncio.open_connection(host, int(port), ssl=self.context)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # TLS 1.3: a refused client certificate comes after
                        await reader.read(1)
        except (OSError, TimeoutError) as exc:
            return f" ({type(exc).__name__}: {exc})" if str(exc) else ""
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return ""

    async def close(self) -> None:
        """Stop the producer and the admin client (subscriptions are the broker's to stop first)."""
        producer, admin = self.producer, self.admin
        self.producer = self.admin = None
        if producer is not None:
            await quietly(producer.stop())
        if admin is not None:
            await quietly(admin.close())

    # -- topics ----------------------------------------------------------------------------------

    async def ensure(self, name: str, partitions: int, config: Mapping[str, str] | None = None) -> None:
        """Create a Kafka topic unless it exists (``topic_config`` plus ``config``); cached."""
        if name in self.known:
            return
        admin = self.admin
        if admin is None:
            raise BrokerError("the kafka broker is not connected: call connect() first")
        async with self._create_lock:
            if name in self.known:
                return
            o = self.settings
            configs = {**o.topic_config, **(config or {})}
            topic = NewTopic(name, partitions, o.replication_factor, topic_configs=configs)
            try:
                response = await admin.create_topics([topic], timeout_ms=o.request_timeout_ms)
            except KafkaError as exc:
                raise BrokerError(f"cannot create kafka topic {name!r}: {reason(exc)}") from exc
            for item in response.topic_errors:
                code = item[1]
                if code not in (0, TOPIC_EXISTS):
                    detail = item[2] if len(item) > 2 and item[2] else for_code(code).__name__
                    raise BrokerError(f"cannot create kafka topic {name!r}: {detail}")
            self.known.add(name)

    async def topics(self) -> list[str]:
        """Every topic of the cluster."""
        admin = self.admin
        if admin is None:
            raise BrokerError("the kafka broker is not connected: call connect() first")
        try:
            return list(await admin.list_topics())
        except KafkaError as exc:
            raise BrokerError(f"kafka at {self.address}: cannot list topics: {reason(exc)}") from exc

    async def exists(self, name: str, fresh: bool = False) -> bool:
        """Whether a topic exists, asking the cluster at most once a second per missing name
        (with the admin API: a metadata request naming the topic could create it where
        auto-creation is on); ``fresh`` asks now."""
        if name in self.known and not fresh:
            return True
        producer = self.producer
        if producer is None:
            raise PublishError("the kafka broker is not connected: call connect() first")
        loop = asyncio.get_running_loop()
        if not fresh:
            if producer.client.cluster.partitions_for_topic(name) is not None and name not in self._absent:
                return True
            checked = self._absent.get(name)
            if checked is not None and loop.time() - checked < ABSENT_RECHECK:
                return False
        admin = self.admin
        try:
            names = set(await admin.list_topics()) if admin is not None else set()
        except KafkaError as exc:
            raise PublishError(f"kafka: cannot list topics: {reason(exc)}") from exc
        if name in names:
            self._absent.pop(name, None)
            return True
        if len(self._absent) > 10_000:
            self._absent.clear()
        self._absent[name] = loop.time()
        return False

    async def drop(self, name: str) -> None:
        """Delete a topic (an exclusive inbox); a failure is logged, not raised."""
        self.known.discard(name)
        self._absent[name] = asyncio.get_running_loop().time()  # this client's metadata still has it
        admin = self.admin
        if admin is None:
            return
        o = self.settings
        try:
            async with asyncio.timeout(o.connect_timeout):
                await admin.delete_topics([name], timeout_ms=o.request_timeout_ms)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("could not delete the kafka topic %s: %s", name, reason(exc))

    # -- records ---------------------------------------------------------------------------------

    async def send(self, name: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        """Write one record to a Kafka topic; returns once the cluster has it."""
        producer = self.producer
        if producer is None:
            raise PublishError("the kafka broker is not connected: call connect() first")
        try:
            await (await producer.send(name, value, key=key, headers=headers))
        except KafkaError as exc:
            raise PublishError(f"kafka did not take the record for {name!r}: {reason(exc)}") from exc
