"""A gap in a partition's offsets is held until the missing records appear (mesh.brokers.kafka.gaps).

Tansu may make a later producer's batch readable before an earlier one's; a consumer at the tail
then skipped the earlier records (lost actor replies in CI). The pure tests pin the rule; the
broker tests write from several producers at once to one partition and count every record.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.brokers import Delivery
from mesh.brokers.kafka import gaps
from mesh.brokers.kafka.gaps import GapCheck
from mesh.event import Event
from tests.support import unique, wait_for

TP = TopicPartition("t", 0)


@dataclass
class Record:
    offset: int


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(gaps.time, "monotonic", c)
    return c


def check(wait: float = 1.0, highwater: int | None = None) -> tuple[GapCheck, list[tuple[TopicPartition, int]]]:
    seeks: list[tuple[TopicPartition, int]] = []
    return GapCheck(lambda tp, o: seeks.append((tp, o)), lambda tp: highwater, wait), seeks


def offsets(records: Any) -> list[int]:
    return [r.offset for r in records]


def recs(*offs: int) -> list[Record]:
    return [Record(o) for o in offs]


def test_records_that_follow_on_pass_untouched(clock: Clock) -> None:
    g, seeks = check()
    batch = recs(5, 6, 7)
    assert g.admit(TP, batch) is batch
    assert offsets(g.admit(TP, recs(8, 9))) == [8, 9]
    assert seeks == []


def test_a_gap_is_held_then_filled_in_order(clock: Clock) -> None:
    g, seeks = check()
    g.expect(TP, 10)
    assert offsets(g.admit(TP, recs(10, 11, 13, 14))) == [10, 11]  # 12 not readable yet
    assert seeks == [(TP, 12)]
    clock.now += 0.1
    assert offsets(g.admit(TP, recs(13, 14))) == []  # fetched again from 12: still missing
    assert offsets(g.admit(TP, recs(12, 13, 14))) == [12, 13, 14]


def test_a_gap_that_stays_is_passed_after_the_wait(clock: Clock) -> None:
    g, seeks = check(wait=0.5)
    g.expect(TP, 0)
    assert offsets(g.admit(TP, recs(2, 3))) == []
    clock.now += 0.6
    assert offsets(g.admit(TP, recs(2, 3))) == [2, 3]  # a transaction marker, say
    assert offsets(g.admit(TP, recs(5))) == []  # a new gap is held afresh
    assert seeks == [(TP, 0), (TP, 4)]


def test_gaps_far_below_the_high_watermark_pass_at_once(clock: Clock) -> None:
    g, seeks = check(highwater=50_000)
    g.expect(TP, 0)
    assert offsets(g.admit(TP, recs(0, 7, 9))) == [0, 7, 9]  # compacted history
    assert seeks == []


def test_wait_zero_turns_holding_off(clock: Clock) -> None:
    g, _ = check(wait=0)
    g.expect(TP, 0)
    assert offsets(g.admit(TP, recs(3))) == [3]


def test_records_fetched_again_are_not_handed_over_twice(clock: Clock) -> None:
    g, _ = check()
    assert offsets(g.admit(TP, recs(0, 1, 2))) == [0, 1, 2]
    assert offsets(g.admit(TP, recs(1, 2, 3))) == [3]
    g.forget([TP])  # the caller sought back itself: from there again
    assert offsets(g.admit(TP, recs(1, 2))) == [1, 2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_late_records_are_all_handed_over_once_in_order(delays: list[int], rnd: Any) -> None:
    """Records become readable in any order (each within a few fetches); what is handed over is
    every offset once, ascending, as long as no gap outlasts the wait."""
    now = [0.0]
    seeks: list[int] = []
    g = GapCheck(lambda tp, o: seeks.append(o), lambda tp: None, 1e9)
    g.expect(TP, 0)
    gaps_clock = gaps.time.monotonic
    gaps.time.monotonic = lambda: now[0]  # type: ignore[assignment]
    try:
        visible_at = dict(enumerate(delays))  # offset o readable from fetch round d
        position, handed = 0, []
        for round_ in range(len(delays) + 10):
            now[0] += 0.01
            batch = recs(*(o for o in range(position, len(delays)) if visible_at[o] <= round_))
            out = offsets(g.admit(TP, batch))
            handed += out
            position = seeks.pop() if seeks else (out[-1] + 1 if out else position)
            seeks.clear()
    finally:
        gaps.time.monotonic = gaps_clock  # type: ignore[assignment]
    assert handed == list(range(len(delays)))


# -- on a real Kafka-protocol broker: several producers, one partition ---------------------------------

PRODUCERS, EACH = 6, 700


async def _write_together(kafka: Any, topic: str) -> None:
    producers = [await kafka() for _ in range(PRODUCERS)]

    async def write(p: int) -> None:
        for k in range(EACH):
            await producers[p].publish_ephemeral(topic, Event(source="/gaps", type="t", id=f"{p}-{k}"))

    await asyncio.gather(*(write(p) for p in range(PRODUCERS)))


@pytest.mark.kafka
@pytest.mark.slow
async def test_an_ephemeral_reader_misses_no_record_of_concurrent_producers(kafka: Any) -> None:
    broker = await kafka()
    topic = unique("gaps-eph")
    seen: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        seen[delivery.event.id] += 1

    sub = await broker.subscribe_ephemeral(topic, handler, concurrency=8)
    await _write_together(kafka, topic)
    await wait_for(lambda: len(seen) == PRODUCERS * EACH, 20, f"every record ({len(seen)} seen)")
    assert max(seen.values()) == 1
    await sub.stop()


@pytest.mark.kafka
@pytest.mark.slow
async def test_a_group_reader_misses_no_record_of_concurrent_producers(kafka: Any) -> None:
    broker = await kafka(partitions=1)
    topic = unique("gaps-group")
    seen: Counter[str] = Counter()

    async def handler(delivery: Delivery) -> None:
        assert delivery.event is not None
        seen[delivery.event.id] += 1
        await delivery.ack()

    sub = await broker.subscribe(topic, unique("g"), handler, concurrency=8)
    await _write_together(kafka, topic)
    await wait_for(lambda: len(seen) == PRODUCERS * EACH, 20, f"every record ({len(seen)} seen)")
    assert max(seen.values()) == 1
    await sub.stop()
