"""Optional adapter capabilities used by replay: reading the broker's history, delivering to one group.

They are small Protocols beside the contract (:mod:`mesh.brokers.base`); an adapter composes a
part for what its broker can do (``broker.history``, ``broker.groups``), and ``Features.history``
/ ``Features.group_delivery`` say so as data. Callers go through :func:`history_reader` and
:func:`group_publisher`, which raise :class:`~mesh.errors.FeatureNotSupported` naming the
alternative.

History may be kept for some topics only: a broker whose ``Features.history`` is False (a new
group does not see earlier events) may still compose a history part that also is a
:class:`TopicHistory`, saying per topic whether it keeps a log (RabbitMQ: topics matching
``stream_topics``, logged in stream queues). :func:`history_reader` with a topic, and
:func:`keeps_history`, take that into account.

========== =================================== =============================================
broker     history (``HistoryReader``)          one group only (``GroupPublisher``)
========== =================================== =============================================
memory     the topic log (offsets, times)       a private queue of the group, read first
kafka      offsets, ``offsets_for_times``       the group's retry topic, due now
rabbitmq   topics matching ``stream_topics``    the group's queue, through the default exchange
           (``*.dlq``): a stream queue, by
           offset or time (3.9+); others: none
nats       none: use the archive                ``_mesh.group.<group>.<subject>``, queue-subscribed
                                                by every member of the group (no-responders if none)
jetstream  the stream, by start time or seq     the subject with header ``_mesh.group``; members of
                                                other groups ack it unseen
redis      the stream, ``XRANGE`` by id/time    an entry with field ``_mesh.group``; consumers of
                                                other groups ack it unseen
========== =================================== =============================================
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from mesh.brokers.base import Broker
from mesh.errors import FeatureNotSupported
from mesh.event import Event
from mesh.extensions import GROUP_MARK

__all__ = [
    "GROUP_MARK",
    "Cursor",
    "GroupPublisher",
    "HistoryReader",
    "HistoryRecord",
    "TopicHistory",
    "group_publisher",
    "history_reader",
    "keeps_history",
]

Cursor = dict[str, Any]
"""A JSON-able position in a broker's log (adapter-specific keys)."""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One message of a broker's log: the event (or why it cannot be read) and where it is."""

    event: Event | None
    time: datetime
    """When the broker took it."""
    cursor: Cursor
    """The position just after this record: reading from it resumes with the next one."""
    error: str | None = None


@runtime_checkable
class HistoryReader(Protocol):
    """An adapter whose broker keeps a log it can read from a time or a position."""

    def read_history(
        self,
        topic: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Cursor | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[HistoryRecord]]:
        """Batches of the topic's log, oldest first (per key in order), up to its end when called.

        Starts just after ``cursor`` if given, else at the first message the broker took at or
        after ``since`` (the start when ``None``); may stop early after a message taken later
        than ``until``. Copies delivered to one group (a replay) are not part of the log.
        """
        ...

    async def topic_exists(self, topic: str) -> bool:
        """Whether the broker knows the topic (has a log for it)."""
        ...


@runtime_checkable
class TopicHistory(Protocol):
    """A history part that keeps a log of some topics only."""

    def history_gap(self, topic: str) -> str | None:
        """``None`` when the broker keeps a log of ``topic``, else why not (for the error message)."""
        ...


@runtime_checkable
class GroupPublisher(Protocol):
    """An adapter that can deliver an event to the members of one group only."""

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether ``group`` subscribes (or subscribed, where the broker remembers) to ``topic``."""
        ...

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """Deliver ``event`` on ``topic`` to ``group`` alone; returns once the broker has it."""
        ...


def history_reader(broker: Broker, topic: str | None = None) -> HistoryReader:
    """The broker as a :class:`HistoryReader` (of ``topic``, when given), or FeatureNotSupported
    naming the archive.

    Without a topic, a broker that keeps a log of some topics only (:class:`TopicHistory`) is
    returned as it is; its reader raises FeatureNotSupported for a topic it keeps no log of.
    """
    part = broker.history
    alternative = "record events with the archive plugin and replay from the archive (--from archive)"
    if isinstance(part, HistoryReader):
        if broker.features.history:
            return part
        if isinstance(part, TopicHistory):
            gap = None if topic is None else part.history_gap(topic)
            if gap is None:
                return part
            raise FeatureNotSupported(
                broker.type, f"replay of {topic!r} from the broker's own history ({gap})", alternative
            )
    raise FeatureNotSupported(broker.type, "replay from the broker's own history (it keeps none)", alternative)


def keeps_history(broker: Broker, topic: str) -> bool:
    """Whether :func:`history_reader` gives a reader of ``topic`` (the broker keeps a log of it)."""
    try:
        history_reader(broker, topic)
    except FeatureNotSupported:
        return False
    return True


def group_publisher(broker: Broker) -> GroupPublisher:
    """The broker as a :class:`GroupPublisher`, or FeatureNotSupported naming the alternative."""
    part = broker.groups
    if isinstance(part, GroupPublisher):
        return part
    raise FeatureNotSupported(
        broker.type, "delivering to one subscription group", "replay to the topic (every group sees it) instead"
    )
