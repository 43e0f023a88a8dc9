"""The RabbitMQ adapter's own ``basic.publish`` frames are byte for byte what aiormq and pamqp write."""

from __future__ import annotations

from typing import Any

import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from mesh.brokers.rabbitmq.frames import publish_frames

HEADERS = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/café", "ce-type": "mesh.invoke.reply"}


def pamqp_frames(channel: int, exchange: str, key: str, body: bytes, max_body: int, **props: Any) -> bytes:
    """What aiormq's ``basic_publish`` queues for the writer."""
    chunks = [body[i : i + max_body] for i in range(0, len(body), max_body)]
    frames = [
        commands.Basic.Publish(exchange=exchange, routing_key=key),
        ContentHeader(properties=commands.Basic.Properties(**props), body_size=len(body)),
        *map(ContentBody, chunks),
    ]
    return ChannelFrame.marshall(channel_number=channel, frames=frames).payload


@pytest.mark.parametrize(
    ("body", "props"),
    [
        (b'{"sku": "espresso"}', {"content_type": "application/json", "headers": HEADERS, "message_id": "e1"}),
        (b"", {"content_type": None, "headers": None, "message_id": None}),
        (b"x" * 2500, {"content_type": "text/plain", "headers": {"ce-id": "é" * 300}, "message_id": "m"}),
        (b"z", {"content_type": None, "headers": {"n": 7, "flag": True, "s": "x"}, "message_id": "m"}),
        (b"z", {"content_type": None, "headers": {"k" * 200: "long name"}, "message_id": None}),
    ],
    ids=["strings", "bare", "split-body", "other-types", "long-name"],
)
def test_frames_match_pamqp(body: bytes, props: dict[str, Any]) -> None:
    ours = publish_frames(3, "ns._mesh.ephemeral", "ns._mesh.reply.a-1", body, delivery_mode=1, max_body=1000, **props)
    assert ours == pamqp_frames(3, "ns._mesh.ephemeral", "ns._mesh.reply.a-1", body, 1000, delivery_mode=1, **props)


def test_a_routing_key_longer_than_a_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        publish_frames(
            1, "x", "k" * 256, b"", content_type=None, headers=None, delivery_mode=1, message_id=None, max_body=100
        )
