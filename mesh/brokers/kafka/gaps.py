"""Holding a partition at a gap in its offsets until the missing records appear.

Kafka appends to a partition one batch at a time, so a consumer at the tail sees offsets one after
another. A Kafka-protocol broker need not: Tansu (0.6) gives two producers' batches their offsets
in one order and may make the later one readable first. A consumer that fetched the later batch
has moved past the earlier one, which becomes readable a moment later and is never delivered (the
mesh saw two replies in 12,000 lost that way with four producers on one partition).

:class:`GapCheck` sits between a fetch and the records' hand-over. Records that follow on from the
last ones handed over (the usual case, checked in O(1) per batch) pass. At a gap near the tail it
hands over the records before the gap and seeks the partition back to it, so the next fetch asks
for the missing offsets again; once they appear they pass in order. A gap that stays for
``wait`` seconds is real (a transaction marker, a record compaction removed) and is passed over,
logged at DEBUG. Gaps far below the high watermark (compacted history) pass at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

__all__ = ["TAIL", "GapCheck"]

log = logging.getLogger("mesh.broker.kafka")

TAIL = 10_000
"""A gap whose next record is within this many offsets of the high watermark is held: a broker
that shows batches out of order does so at the tail, compaction never there."""


class GapCheck:
    """The records of each partition a consumer may hand over now (see the module docstring).

    ``seek(tp, offset)`` moves the consumer's fetch position; ``highwater(tp)`` is the partition's
    last known high watermark (``None`` when unknown). ``wait`` (seconds) 0 turns holding off.
    Call :meth:`forget` whenever the caller itself seeks or the partition is (re)assigned.
    """

    __slots__ = ("_highwater", "_next", "_seek", "_since", "wait")

    def __init__(self, seek: Callable[[TopicPartition, int], None],
                 highwater: Callable[[TopicPartition], int | None], wait: float) -> None:
        self.wait = wait
        self._seek = seek
        self._highwater = highwater
        self._next: dict[TopicPartition, int] = {}
        self._since: dict[TopicPartition, float] = {}

    @classmethod
    def of(cls, consumer: Any, wait_ms: int) -> GapCheck:
        """A check over an ``AIOKafkaConsumer`` (its ``seek`` and ``highwater``)."""

        def highwater(tp: TopicPartition) -> int | None:
            try:
                return consumer.highwater(tp)  # type: ignore[no-any-return]
            except Exception:  # no longer assigned: treated as unknown
                return None

        return cls(consumer.seek, highwater, wait_ms / 1000)

    def admit(self, tp: TopicPartition, records: Sequence[Any]) -> Sequence[Any]:
        """The records of ``tp`` to hand over now, in order (all of them, usually)."""
        if not records:
            return records
        first, last = records[0].offset, records[-1].offset
        expected = self._next.get(tp, first)
        if first == expected and last - first == len(records) - 1:
            self._next[tp] = last + 1
            if self._since:
                self._since.pop(tp, None)
            return records
        return self._slow(tp, records, expected)

    def _slow(self, tp: TopicPartition, records: Sequence[Any], expected: int) -> Sequence[Any]:
        out: list[Any] = []
        for record in records:
            offset = record.offset
            if offset < expected:
                continue  # fetched again after a seek back: handed over already
            if offset > expected and self._hold(tp, expected, offset):
                self._seek(tp, expected)
                self._next[tp] = expected
                return out
            out.append(record)
            expected = offset + 1
        self._next[tp] = expected
        self._since.pop(tp, None)
        return out

    def _hold(self, tp: TopicPartition, expected: int, offset: int) -> bool:
        if self.wait <= 0:
            return False
        highwater = self._highwater(tp)
        if highwater is not None and highwater - offset > TAIL:
            return False
        now = time.monotonic()
        since = self._since.setdefault(tp, now)
        if now - since < self.wait:
            return True
        del self._since[tp]
        log.debug("kafka %s: offsets %d to %d did not appear within %gs; going on at %d",
                  tp, expected, offset - 1, self.wait, offset)
        return False

    def forget(self, tps: Sequence[TopicPartition] | None = None) -> None:
        """Start afresh for these partitions (all when ``None``): the caller sought or reassigned."""
        if tps is None:
            self._next.clear()
            self._since.clear()
            return
        for tp in tps:
            self._next.pop(tp, None)
            self._since.pop(tp, None)

    def expect(self, tp: TopicPartition, offset: int) -> None:
        """The next record of ``tp`` is at ``offset`` (a position the caller resolved)."""
        self._next[tp] = offset
        self._since.pop(tp, None)
