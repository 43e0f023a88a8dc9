"""Poison entries on Redis Streams, added with a plain redis-py ``XADD``.

An entry is a list of byte-string fields (``ce_<attr>``, ``content-type``, ``data``, or one
``event`` field for structured mode), so Redis gets the common cases plus fields that are not
UTF-8. Nothing pending: ``XPENDING`` of the group is 0.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as redis

from tests.poison.support import Message, PoisonRun, attributes, common, eventually, good, tag, tagged
from tests.support import BrokerSpec

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def fields(message: Message) -> dict[Any, Any]:
    """The message as stream entry fields."""
    if message.structured:
        return {"event": message.body}
    out: dict[Any, Any] = dict(message.headers)
    if message.content_type is not None:
        out["content-type"] = message.content_type
    out["data"] = message.body
    return out


def not_utf8() -> list[Message]:
    """Fields Redis carries as bytes that are not UTF-8: a content type, an attribute value."""
    return tagged(
        [
            Message(
                tag("redis-content-type"),
                tag("redis-content-type").encode(),
                attributes("ce_", tag("redis-content-type")),
                b"\xff\xfe",
            ),
            Message(
                tag("redis-source"),
                tag("redis-source").encode(),
                {**attributes("ce_", tag("redis-source")), "ce_source": b"/\xff\xfe"},
                "text/plain",
            ),
        ]
    )


@pytest.mark.parametrize("broker_spec", ["redis"], indirect=True)
async def test_no_entry_stops_a_redis_consumer(broker_spec: BrokerSpec) -> None:
    sent = [*common("ce_"), *not_utf8(), *(good("ce_", i) for i in range(5))]
    client = redis.Redis.from_url(broker_spec.url or "")
    try:
        async with PoisonRun(broker_spec) as run:
            for message in sent:
                await client.xadd(run.topic, fields(message))
            await run.settled(sent)

            async def pending() -> int:
                return int((await client.xpending(run.topic, run.group))["pending"])

            await eventually(pending, 0, what="XPENDING of the group")
    finally:
        await client.aclose()
    run.check(sent)
