"""Options of the Redis Streams broker (``broker: {type: redis, options: {...}}``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mesh.brokers.base import BrokerOptions

__all__ = ["RedisOptions"]


class RedisOptions(BrokerOptions):
    """``broker: {type: redis, url: redis://host:port/db, options: {...}}``."""

    connect_timeout: float = Field(5.0, gt=0)
    """Seconds ``connect()`` may take (TCP, AUTH and PING) before it fails."""
    socket_timeout: float = Field(10.0, gt=0)
    """Seconds one command may wait for its reply; must exceed ``block_ms``."""
    username: str | None = None
    """ACL user; overrides the one in the URL (use a ``secretKeyRef`` rather than the URL)."""
    password: str | None = None
    """Password; overrides the one in the URL (use a ``secretKeyRef`` rather than the URL)."""
    maxlen: int | None = Field(1_000_000, ge=1)
    """Trim each stream to about this many entries on every XADD; ``null`` never trims."""
    approximate_trim: bool = True
    """Trim with ``MAXLEN ~`` (whole macro nodes, cheap) rather than to the exact length."""
    initial_offset: Literal["earliest", "latest"] = "earliest"
    """Where a group seen for the first time starts: the whole stream (``0``) or new entries (``$``)."""
    batch: int = Field(100, ge=1, le=1000)
    """Entries taken per XREADGROUP (``COUNT``), and per claim of pending entries."""
    block_ms: int = Field(100, ge=1)
    """How long one XREADGROUP waits for new entries; also bounds how late ``stop()``,
    immediate redeliveries from concurrent handlers and due delayed entries are noticed."""
    claim_idle_ms: int = Field(15_000, ge=100)
    """An entry pending this long with a consumer that stopped renewing it (a crashed process)
    is taken over by another consumer of the group (XAUTOCLAIM). Live consumers renew their
    entries every third of this, so a slow handler is not taken over."""
    claim_interval_ms: int = Field(1_000, ge=10)
    """How often a subscription looks for entries to take over (XAUTOCLAIM)."""
    delay_poll_ms: int = Field(100, ge=1)
    """How often a subscription looks for delayed entries that are due."""
    consumer_name: str | None = None
    """A stable consumer name (e.g. the pod name). A restarted process with the same name takes
    its own pending entries back at once; by default each subscription gets
    ``<client_id>-<random>`` and a crashed one's entries wait ``claim_idle_ms``."""

    @model_validator(mode="after")
    def _block_fits_socket_timeout(self) -> RedisOptions:
        if self.block_ms / 1000 >= self.socket_timeout:
            raise ValueError("block_ms must be shorter than socket_timeout")
        return self
