"""The CloudEvents SDK's own objects: publish them, receive them, convert both ways without loss."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent as CoreCloudEvent
from cloudevents.v1.http import CloudEvent as HttpCloudEvent
from cloudevents.v1.pydantic import CloudEvent as PydanticCloudEvent
from pydantic import BaseModel

from mesh import App, Event
from tests.support import unique

FLAVOURS = ["http", "pydantic", "core"]
"""Whether route.py hands an "event" parameter through its converter (the SDK parameter needs it)."""
CLASSES = {"http": HttpCloudEvent, "pydantic": PydanticCloudEvent, "core": CoreCloudEvent}


class Order(BaseModel):
    id: str
    total: int


def _full_event() -> Event:
    return Event(
        "shop.order.placed",
        "/shop",
        {"id": "A1", "total": 3},
        subject="A1",
        time=datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC),
        dataschema="https://example.com/order.json",
        extensions={
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "partitionkey": "A1",
            "meshattempt": 2,
            "flag": True,
            "blob": b"\x00\x01",
            "when": datetime(2026, 1, 1, tzinfo=UTC),
        },
    )


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_event_to_sdk_and_back_keeps_every_attribute_and_extension(flavour: str) -> None:
    event = _full_event()
    sdk = event.to_sdk(flavour)
    assert isinstance(sdk, CLASSES[flavour])
    back = Event.from_sdk(sdk)
    assert back == event
    assert back.extensions == event.extensions
    assert back.time == event.time


@pytest.mark.parametrize("flavour", ["http", "pydantic"])
def test_an_sdk_event_with_a_long_extension_name_converts(flavour: str) -> None:
    sdk = CLASSES[flavour]({"type": "t", "source": "/legacy", "averyveryverylongextensionname": "x"}, {"a": 1})
    event = Event.from_sdk(sdk)
    assert event.extensions == {"averyveryverylongextensionname": "x"}
    assert event.id == sdk["id"]
    assert Event.from_sdk(event.to_sdk(flavour)) == event


def test_model_data_goes_to_the_sdk_as_json() -> None:
    sdk = Event("t", "/s", Order(id="A", total=1)).to_sdk()
    assert sdk.get_data() == {"id": "A", "total": 1}


def test_from_sdk_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="not a CloudEvents SDK event"):
        Event.from_sdk({"type": "t"})


@pytest.mark.memory
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_publish_accepts_an_sdk_cloudevent(flavour: str) -> None:
    topic = unique("sdk")
    app = App("sdk-pub", config={"broker": {"type": "memory", "options": {"name": unique("hub")}}})
    got: list[Event] = []

    @app.subscribe(topic)
    async def on(event: Event) -> None:
        got.append(event)

    sdk = CLASSES[flavour](
        {"type": "legacy.thing", "source": "/legacy", "id": "sdk-1", "specversion": "1.0", "tenant": "acme"},
        {"n": 1},
    )
    async with app:
        sent = await app.publish(topic, sdk)
        await app.join()
    assert sent.id == "sdk-1"
    assert [(e.type, e.source, e.id, e.data, e.extensions.get("tenant")) for e in got] == [
        ("legacy.thing", "/legacy", "sdk-1", {"n": 1}, "acme")
    ]


@pytest.mark.memory
async def test_publish_without_a_type_needs_an_sdk_event() -> None:
    app = App("sdk-pub", config={"broker": {"type": "memory", "options": {"name": unique("hub")}}})
    async with app:
        with pytest.raises(Exception, match="needs a type="):
            await app.publish(unique("sdk"), {"a": 1})


@pytest.mark.memory
@pytest.mark.parametrize("flavour", ["http", "pydantic"])
async def test_a_handler_parameter_annotated_with_the_sdk_class_receives_one(flavour: str) -> None:
    topic = unique("sdk")
    app = App("sdk-sub", config={"broker": {"type": "memory", "options": {"name": unique("hub")}}})
    got: list[Any] = []
    cls = CLASSES[flavour]

    async def on(ce: cls) -> None:  # type: ignore[valid-type]
        got.append(ce)

    on.__annotations__["ce"] = cls
    app.subscribe(topic)(on)
    async with app:
        sent = await app.publish(topic, {"n": 2}, type="shop.x", extensions={"tenant": "acme"})
        await app.join()
    assert len(got) == 1 and isinstance(got[0], cls)
    assert got[0]["id"] == sent.id and got[0]["tenant"] == "acme" and got[0].get_data() == {"n": 2}
