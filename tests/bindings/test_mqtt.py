"""mqtt-in and mqtt-out against the real Mosquitto, with the broker in between."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt

from mesh import Event
from mesh.bindings.mqtt import to_mqtt
from mesh.codecs import to_structured
from tests.bindings.conftest import MQTT_URL, MakeApp, need
from tests.support import unique, wait_for


def client() -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", 1883, protocol=aiomqtt.ProtocolVersion.V5)


async def test_mqtt_in_reads_binary_structured_json_and_random_bytes(make_app: MakeApp) -> None:
    need(MQTT_URL, 1883, "mosquitto")
    topic, base = unique("telemetry"), unique("plant")
    options = {
        "type": "mqtt-in",
        "url": MQTT_URL,
        "filter": f"{base}/+/temp",
        "topic": topic,
        "type_template": "plant.temp",
    }
    app, got = await make_app({"sensors": options}, listen=topic)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with client() as mqtt:
        payload, props = to_mqtt(
            Event("reading", "/sensor/1", {"c": 21}, id="bin-1", extensions={"traceparent": parent}), "binary"
        )
        await mqtt.publish(f"{base}/1/temp", payload, qos=1, properties=props)
        payload, props = to_mqtt(Event("reading", "/sensor/2", {"c": 22}, id="str-1"), "structured")
        await mqtt.publish(f"{base}/2/temp", payload, qos=1, properties=props)
        await mqtt.publish(f"{base}/3/temp", to_structured(Event("reading", "/sensor/3", {"c": 23}, id="v3-1")), qos=1)
        await mqtt.publish(f"{base}/4/temp", b'{"c": 24}', qos=1)
        await mqtt.publish(f"{base}/5/temp", bytes(range(256)), qos=1)
        await mqtt.publish(f"{base}/6/temp", b"{not json", qos=1)
    await wait_for(lambda: len(got.events) == 6, what="six events")
    by_id = got.by_id()
    assert by_id["bin-1"].data == {"c": 21} and by_id["bin-1"].type == "reading"
    assert str(by_id["bin-1"].extensions["traceparent"]).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert by_id["str-1"].data == {"c": 22} and by_id["v3-1"].data == {"c": 23}
    wrapped = {e.subject: e for e in got.events if e.type == "plant.temp"}
    assert wrapped[f"{base}/4/temp"].data == {"c": 24}
    assert wrapped[f"{base}/5/temp"].data == bytes(range(256))
    assert wrapped[f"{base}/6/temp"].data == b"{not json"
    stats = app.bindings.bindings["sensors"].stats
    # counted once the publish returned, which may be after the subscriber already has the event
    await wait_for(lambda: (stats.received, stats.emitted, stats.wrapped) == (6, 6, 3), what="the counts (6, 6, 3)")
    assert app.bindings.bindings["sensors"].state == "running"


async def test_mqtt_out_publishes_cloudevents_by_call_and_from_topic(make_app: MakeApp) -> None:
    need(MQTT_URL, 1883, "mosquitto")
    mqtt_topic, from_topic = unique("out"), unique("cmds")
    out = {"type": "mqtt-out", "url": MQTT_URL, "topic": mqtt_topic, "from_topic": from_topic, "event_type": "cmd.sent"}
    seen: list[aiomqtt.Message] = []
    async with client() as mqtt:
        await mqtt.subscribe(mqtt_topic, qos=1)

        async def listen() -> None:
            async for message in mqtt.messages:
                seen.append(message)

        task = asyncio.create_task(listen())
        try:
            app, _ = await make_app({"pump": out})
            result = await app.binding("pump").invoke("publish", {"speed": 3})
            await app.publish(from_topic, {"speed": 4}, type="pump.set", id="p-4")
            await wait_for(lambda: len(seen) == 2, what="two MQTT messages")
        finally:
            task.cancel()
    by_id = {dict(m.properties.UserProperty)["id"]: m for m in seen}  # type: ignore[union-attr]
    direct = dict(by_id[result["id"]].properties.UserProperty)  # type: ignore[union-attr]
    assert direct["type"] == "cmd.sent" and direct["specversion"] == "1.0"
    assert by_id[result["id"]].payload == b'{"speed":3}'
    driven = dict(by_id["p-4"].properties.UserProperty)  # type: ignore[union-attr]
    assert driven["type"] == "pump.set" and by_id["p-4"].properties.ContentType == "application/json"  # type: ignore[union-attr]


async def test_mqtt_out_into_mqtt_in_keeps_the_event(make_app: MakeApp) -> None:
    """Both directions through Mosquitto: topic -> mqtt-out -> Mosquitto -> mqtt-in -> topic."""
    need(MQTT_URL, 1883, "mosquitto")
    a, b, mqtt_topic = unique("a"), unique("b"), unique("wire")
    bindings: dict[str, Any] = {
        "tx": {"type": "mqtt-out", "url": MQTT_URL, "topic": mqtt_topic, "from_topic": a},
        "rx": {"type": "mqtt-in", "url": MQTT_URL, "filter": mqtt_topic, "topic": b},
    }
    app, got = await make_app(bindings, listen=b)
    sent = await app.publish(a, {"x": 1}, type="wire.test", subject="s", extensions={"tenant": "acme"})
    await wait_for(lambda: len(got.events) == 1, what="the event back")
    back = got.events[0]
    assert (back.id, back.type, back.source, back.subject, back.data) == (
        sent.id,
        "wire.test",
        sent.source,
        "s",
        {"x": 1},
    )
    assert back.extensions["tenant"] == "acme"
