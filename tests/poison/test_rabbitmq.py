"""Poison messages on RabbitMQ, published to the topic exchange with a plain aio-pika channel.

AMQP header tables hold typed values (integers, booleans, nested tables, arrays, void), so
RabbitMQ gets the common cases plus typed header values. Nothing pending: once the App stopped
(unacked messages go back to the queue), the group's queue holds no message.
"""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest

from tests.poison.support import Message, PoisonRun, common, good, typed_headers
from tests.support import BrokerSpec

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]


def amqp_message(message: Message) -> aio_pika.Message:
    """The message as aio-pika sends it: headers table, ``content_type`` property."""
    headers: Any = dict(message.headers)
    return aio_pika.Message(message.body, headers=headers, content_type=message.content_type)


@pytest.mark.parametrize("broker_spec", ["rabbitmq"], indirect=True)
async def test_no_message_stops_a_rabbitmq_consumer(broker_spec: BrokerSpec) -> None:
    sent = [*common("ce-"), *typed_headers("ce-"), *(good("ce-", i) for i in range(5))]
    connection = await aio_pika.connect(broker_spec.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        async with PoisonRun(broker_spec) as run:
            exchange = await channel.get_exchange(run.topic)  # declared by the subscription
            for message in sent:
                await exchange.publish(amqp_message(message), routing_key=run.topic)
            await run.settled(sent)
        queue = await channel.declare_queue(f"{run.topic}.{run.group}", passive=True)
        assert queue.declaration_result.message_count == 0, "the group's queue is empty, nothing unacked"
    finally:
        await connection.close()
    run.check(sent)
