"""Options of the in-process broker."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mesh.brokers.options import BrokerOptions


class MemoryOptions(BrokerOptions):
    """``broker: {type: memory, options: {...}}``."""

    name: str = "default"
    """Apps in one process with the same name share one broker."""
    retention: int = Field(10_000, ge=1)
    """Events kept per topic, for late groups and replay."""
    initial_offset: Literal["earliest", "latest"] = "earliest"
    """Where a group seen for the first time starts reading."""
