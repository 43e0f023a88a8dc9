"""Options of the NATS brokers: core NATS (``type: nats``) and JetStream (``type: jetstream``).

The URL carries the servers: ``nats://host:4222``, a comma-separated list for a cluster
(``nats://a:4222,nats://b:4222``), credentials inline (``nats://user:pass@host:4222``) or
``tls://`` for TLS. Both types share the connection settings; JetStream adds the stream and
consumer settings the mesh uses when it creates them (objects that already exist keep theirs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mesh.brokers.base import BrokerOptions

__all__ = ["JetStreamOptions", "NatsOptions"]


class NatsOptions(BrokerOptions):
    """Every setting of the core NATS adapter (and the connection settings of JetStream)."""

    # -- connection ------------------------------------------------------------------------------
    connect_timeout: float = Field(5.0, gt=0)
    """Seconds ``connect()`` may take, over every server of the URL, before it fails with
    ``BrokerConnectionError``. The first connection is not retried beyond this."""
    max_reconnect_attempts: int = Field(-1, ge=-1)
    """Reconnection attempts per server once a connection was made (-1: forever). The client
    reconnects on its own and restores its subscriptions."""
    reconnect_time_wait: float = Field(2.0, gt=0)
    """Seconds between reconnection attempts to one server."""
    ping_interval: float = Field(20.0, gt=0)
    """Seconds between client pings; two unanswered pings declare the connection dead."""
    name: str | None = None
    """Connection name shown by the server's monitoring (default: the app's client id)."""
    fast_client: bool = True
    """Use the mesh's faster client (headers read and written in one pass) where nats-py is a
    version it was tested with; ``false`` always uses nats-py's own client."""

    # -- credentials (the URL may carry user and password instead) -------------------------------
    user: str | None = None
    """User name for user/password authentication."""
    password: str | None = None
    """Password for user/password authentication."""
    token: str | None = None
    """Authentication token."""
    creds_file: str | None = None
    """Path of a ``.creds`` file (JWT and NKey seed) for decentralised authentication."""
    tls_ca_file: str | None = None
    """CA bundle to verify the server with (turns TLS on)."""
    tls_cert_file: str | None = None
    """Client certificate for mutual TLS (with ``tls_key_file``)."""
    tls_key_file: str | None = None
    """Private key of ``tls_cert_file``."""

    # -- consuming -------------------------------------------------------------------------------
    pending_limit: int = Field(65_536, ge=1)
    """Messages one core NATS subscription buffers ahead of its handler; above it the newest are
    dropped (a slow consumer, as NATS itself does). Unused by JetStream, which pulls in batches."""
    pending_bytes_limit: int = Field(64 * 1024 * 1024, ge=1)
    """Payload bytes one core NATS subscription buffers ahead of its handler (64 MiB, as nats-py);
    above it the newest are dropped, like ``pending_limit``."""


class JetStreamOptions(NatsOptions):
    """Every setting of the JetStream adapter: connection, stream, consumer, publishing."""

    # -- the stream the mesh creates per topic -----------------------------------------------------
    storage: Literal["file", "memory"] = "file"
    """Where a stream keeps its messages; ``memory`` is faster and lost with the server."""
    retention: Literal["limits", "interest"] = "limits"
    """``limits``: keep messages up to the limits below, so new groups see history.
    ``interest``: drop a message once every existing group acked it (no history for new groups)."""
    max_age: float | None = Field(None, gt=0)
    """Seconds a message is kept (``None``: no age limit)."""
    max_msgs: int | None = Field(None, ge=1)
    """Messages kept per stream; the oldest go first (``None``: no limit)."""
    max_bytes: int | None = Field(None, ge=1)
    """Bytes kept per stream; the oldest go first (``None``: no limit)."""
    replicas: int = Field(1, ge=1, le=5)
    """Copies of each stream in a JetStream cluster."""
    duplicate_window: float = Field(120.0, ge=0)
    """Seconds the server remembers ``Nats-Msg-Id`` values to drop a re-published duplicate."""

    # -- publishing --------------------------------------------------------------------------------
    dedup: bool = True
    """Send ``Nats-Msg-Id: <source> <id>`` so a publish retried within ``duplicate_window`` is
    stored once. A replayed event keeps its id; its ``meshreplay`` name is added to the header,
    so a replay is not taken for a duplicate."""
    publish_timeout: float = Field(5.0, gt=0)
    """Seconds ``publish`` waits for the stream's acknowledgement before ``PublishError``."""

    # -- the durable consumer the mesh creates per group -------------------------------------------
    initial_offset: Literal["earliest", "latest"] = "earliest"
    """Where a group seen for the first time starts: every retained message or only new ones."""
    ack_wait: float = Field(30.0, gt=0)
    """Seconds the server waits for an ack before it redelivers (e.g. after a consumer died)."""
    max_deliver: int = Field(-1, ge=-1)
    """Deliveries of one message before the server gives up on it (-1: no limit; the mesh's
    retry policy dead-letters first)."""
    max_ack_pending: int = Field(1000, ge=1)
    """Unacknowledged messages one group may hold. With 1 (and ``concurrency: 1``) the group
    handles one message at a time in stream order: events keep their order by key."""

    # -- pulling -----------------------------------------------------------------------------------
    batch: int = Field(100, ge=1)
    """Messages one subscription asks for ahead of its handler. Their ``ack_wait`` clock runs
    while they wait, so keep ``batch`` x handler time well under ``ack_wait``."""
    pull_expires: float = Field(5.0, ge=0.5)
    """Seconds a pull request waits on the server for messages before it is renewed."""
