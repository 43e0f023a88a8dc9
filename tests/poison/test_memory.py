"""Poison messages on the memory broker, put on the topic raw with ``publish_raw`` (Kafka binding).

The memory broker carries anything a WireMessage holds, so it gets every case: the common ones,
Kafka's null header values and non-UTF-8 content type, and AMQP-style typed header values.
"""

from __future__ import annotations

import pytest

from mesh.brokers.memory import MemoryBroker
from mesh.codecs import WireMessage
from tests.poison.support import Message, PoisonRun, common, good, kafka_nulls, typed_headers
from tests.support import BrokerSpec, wait_for

pytestmark = [pytest.mark.memory, pytest.mark.timeout(120)]


def wire(message: Message) -> WireMessage:
    """The message as the memory broker's raw publish takes it."""
    return WireMessage(message.body, message.headers, None, message.content_type)


async def test_no_message_stops_a_memory_consumer(memory_spec: BrokerSpec) -> None:
    bad = [*common("ce_"), *kafka_nulls(), *typed_headers("ce_")]
    sent = [*bad, *(good("ce_", i) for i in range(5))]
    try:
        async with PoisonRun(memory_spec) as run:
            broker = run.worker.broker
            assert isinstance(broker, MemoryBroker)
            for message in sent:
                await broker.publish_raw(run.topic, wire(message))
            await run.settled(sent)
            await wait_for(lambda: broker.pending() == 0, what="nothing pending on the memory broker")
        run.check(sent)
    finally:
        MemoryBroker.reset(memory_spec.options["name"])
