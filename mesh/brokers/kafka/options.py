"""Options of the Kafka broker (``broker: {type: kafka, options: {...}}``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from mesh.brokers.base import BrokerOptions

__all__ = ["KafkaOptions"]


class KafkaOptions(BrokerOptions):
    """Every setting of the Kafka adapter; the defaults suit a development cluster."""

    # -- topology --------------------------------------------------------------------------------
    partitions: int = Field(3, ge=1)
    """Partitions of a topic the mesh creates (existing topics are left as they are)."""
    replication_factor: int = Field(1, ge=1)
    """Replicas of a topic the mesh creates; use 3 on a production cluster."""
    topic_config: dict[str, str] = Field(default_factory=dict)
    """Topic-level configs for topics the mesh creates, e.g. ``{"retention.ms": "604800000"}``."""
    retry_partitions: int | None = Field(None, ge=1)
    """Partitions of each retry topic (``_mesh.retry.<group>.<topic>``); default: ``partitions``."""
    retry_retention_ms: int | None = Field(None, ge=1)
    """``retention.ms`` of retry topics; keep it above the longest retry delay (default: the
    broker's retention)."""

    # -- connection ------------------------------------------------------------------------------
    connect_timeout: float = Field(5.0, gt=0)
    """Seconds ``connect()`` (and a consumer's first connection) may take before it fails."""
    request_timeout_ms: int = Field(30_000, ge=1)
    """How long a single request to the cluster may take."""
    client_id: str | None = None
    """Client id sent to the cluster (shows in broker logs and quotas); default: the app's id."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How to talk to the brokers."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """SASL mechanism with ``SASL_*`` protocols."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password (use a ``secretKeyRef`` in the config file)."""
    ssl_cafile: str | None = None
    """CA bundle to verify the brokers with ``SSL``/``SASL_SSL`` (default: the system's)."""
    ssl_certfile: str | None = None
    """Client certificate for mutual TLS."""
    ssl_keyfile: str | None = None
    """Private key of the client certificate."""

    # -- producer --------------------------------------------------------------------------------
    acks: Literal[0, 1, "all"] = "all"
    """Replicas that must have an event before ``publish`` returns (``all``: every in-sync one)."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    """Batch compression; snappy, lz4 and zstd need ``cramjam`` installed."""
    linger_ms: int = Field(0, ge=0)
    """How long the producer waits to fill a batch; a few ms raise throughput under load."""
    max_batch_size: int = Field(262_144, ge=1)
    """Largest batch per partition, in bytes. aiokafka's default (16 KiB) holds about 60 events once
    the CloudEvents headers are on each record, and publishers then queue behind the one open
    batch per partition; 256 KiB measured 1.5x the throughput here (docs/benchmarks.md)."""
    max_request_size: int = Field(1_048_576, ge=1)
    """Largest request (and so largest event) the producer sends, in bytes."""

    # -- consumer --------------------------------------------------------------------------------
    initial_offset: Literal["earliest", "latest"] = "earliest"
    """Where a group without committed offsets starts: the oldest retained event or new ones."""
    fetch_max_wait_ms: int = Field(50, ge=0)
    """How long a fetch waits for data; small keeps latency low on brokers that do not wake an
    idle fetch when data arrives (Tansu)."""
    max_poll_records: int = Field(500, ge=1)
    """Most records taken per fetch round."""
    session_timeout_ms: int = Field(10_000, ge=1)
    """A member that is silent this long is dropped from its group and its partitions move."""
    heartbeat_interval_ms: int = Field(1_000, ge=1)
    """Heartbeat period; also how fast a member notices a rebalance (keep it < 1/3 session)."""
    max_poll_interval_ms: int = Field(300_000, ge=1)
    """Longest a handler may block a subscription before the member leaves its group."""
    rebalance_timeout_ms: int | None = Field(None, ge=1)
    """How long the group waits for members to rejoin (default: ``max_poll_interval_ms``)."""
    group_instance_id: str | None = None
    """Static membership: a stable id per process (e.g. the pod name) so a restart within
    ``session_timeout_ms`` keeps its partitions without a rebalance. The subscriptions of a group
    share one member, which takes this id (a second member of the group in the same broker, for a
    second subscription to one topic, takes ``<id>-1``, and so on)."""
    commit_interval_ms: int = Field(1_000, ge=0)
    """Acked offsets are committed at most this often while busy, at once when idle, and always
    on stop and on a rebalance (0: after every fetch round)."""
    join_timeout: float = Field(60.0, gt=0)
    """Seconds ``subscribe`` waits for the group to assign partitions; a member still without any
    then (more members than partitions) returns anyway and idles until a rebalance gives it some."""
    gap_wait_ms: int = Field(1_000, ge=0)
    """How long a consumer holds a partition at a gap in its offsets near the tail, waiting for the
    missing records (a broker such as Tansu may show a later producer's batch before an earlier
    one's: without the wait, the earlier one would be skipped). Kafka itself leaves gaps only at
    transaction markers, which then cost this wait each; 0 turns holding off (see
    :mod:`mesh.brokers.kafka.gaps`)."""
    ephemeral_fetch_max_wait_ms: int = Field(10, ge=0)
    """``fetch_max_wait_ms`` of the group-less consumers of the mesh's own short-lived topics
    (invocation replies, presence): a reply waits at most about this long in an idle fetch."""

    @model_validator(mode="after")
    def _check(self) -> KafkaOptions:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username")
        return self
