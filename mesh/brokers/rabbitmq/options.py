"""Options of the RabbitMQ broker (``broker: {type: rabbitmq, options: {...}}``).

The URL carries the address and virtual host, and may carry credentials:
``amqp://user:pass@host:5672/vhost`` (``amqps://`` for TLS). ``username`` and ``password``
override the URL's, so a ``secretKeyRef`` can supply them. There is no ``initial_offset``:
a RabbitMQ queue keeps no history, so a new group starts with the events published after it
was created.

Topics matching ``stream_topics`` (dead-letter topics by default) are kept readable besides: a
stream queue bound to the topic's exchange logs what is published (RabbitMQ 3.9+), so
``mesh dlq`` and ``mesh replay --from broker`` can read them (:mod:`.history`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from mesh.brokers.base import BrokerOptions

__all__ = ["RabbitMQOptions"]


class RabbitMQOptions(BrokerOptions):
    """Every setting of the RabbitMQ adapter; the defaults favour safety over raw speed."""

    # -- connection ------------------------------------------------------------------------------
    connect_timeout: float = Field(5.0, gt=0)
    """Seconds ``connect()`` may take before it fails with ``BrokerConnectionError``."""
    username: str | None = None
    """User; overrides the one in the URL (the client's default is ``guest``)."""
    password: SecretStr | None = None
    """Password; overrides the one in the URL (use a ``secretKeyRef`` rather than the URL)."""
    heartbeat: int = Field(60, ge=0, le=65_535)
    """AMQP heartbeat in seconds: a silent peer is declared dead after about twice this (0: off)."""
    reconnect_interval: float = Field(1.0, gt=0)
    """Seconds between reconnection attempts after the connection is lost; the client reconnects
    on its own and restores the topology and consumers."""

    # -- publishing ------------------------------------------------------------------------------
    publisher_confirms: bool = True
    """``publish`` returns once the broker confirmed the event (persisted, for durable queues).
    Off: it returns once the frame is written, faster but an event can be lost on a crash."""
    persistent: bool = True
    """Publish with delivery mode 2, so events on durable queues survive a broker restart."""
    operation_timeout: float = Field(10.0, gt=0)
    """Seconds a publish (waiting for a lost connection to come back, then for the confirm), a
    declaration (``ensure_topic``, ``subscribe``) or a nack's re-publish may take before it
    fails with ``PublishError``/``BrokerError``."""

    # -- consuming -------------------------------------------------------------------------------
    prefetch: int = Field(100, ge=1, le=65_535)
    """Unacknowledged deliveries the broker sends ahead to one subscription; raised to the
    subscription's ``concurrency`` when that is larger."""
    queue_type: Literal["classic", "quorum"] = "classic"
    """Type of the group queues the mesh declares. ``quorum`` is replicated (use it on a
    cluster) and counts returns in ``x-delivery-count``, which the adapter adds to the attempt."""
    single_active_consumer: bool = False
    """Declare group queues with ``x-single-active-consumer``: one member of a group consumes at
    a time (the others stand by), so with ``concurrency: 1`` events keep their publish order."""

    # -- readable topics (stream queues, RabbitMQ 3.9+) ---------------------------------------------
    stream_topics: list[str] = Field(default_factory=lambda: ["*.dlq"])
    """Glob patterns of topics (without the namespace) whose events are also logged in a stream
    queue ``_mesh.stream.<topic>``, readable by offset and time: dead-letter topics by default, so
    ``mesh dlq list/show/redrive/purge`` work without the archive. ``[]``: none."""
    stream_max_age: float | None = Field(7 * 86_400.0, gt=0)
    """Seconds a stream keeps a message (``x-max-age``); ``None``: no age limit. Removal is by
    whole segment, so a message may outlive this by up to one segment's worth of traffic."""
    stream_max_bytes: int | None = Field(None, gt=0)
    """Bytes a stream keeps at most (``x-max-length-bytes``, oldest segments removed first)."""
    stream_segment_bytes: int = Field(8_000_000, gt=0)
    """Size of a stream's segment files (``x-stream-max-segment-size-bytes``): retention removes
    whole segments, so small segments let a quiet dead-letter stream expire on time."""

    # -- delayed redelivery ----------------------------------------------------------------------
    delay_precision: int = Field(2, ge=1, le=9)
    """Significant digits kept of a ``nack(delay)`` in milliseconds; delays are rounded up (1234
    ms -> 1300 ms with 2), which bounds the number of delay queues (``_mesh.delay.<ms>``)."""
    delay_queue_expires: float | None = Field(3600.0, gt=0)
    """Seconds an unused delay queue lives before the broker deletes it (plus its own delay, so a
    queue never expires with a message in it). ``None`` keeps delay queues forever. Every app
    sharing a virtual host must use the same value."""
