"""``mesh asyncapi``: AsyncAPI 3.0 documents of apps and of the live mesh, valid per the official schema."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from mesh import App, Event
from mesh.asyncapi import app_document, live_document
from tests.support import DEFAULT_URLS, unique, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "schemas" / "asyncapi" / "asyncapi-3.0.0.json").read_text())


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(doc)


class Order(BaseModel):
    id: str
    qty: int


class Line(BaseModel):
    sku: str


class Basket(BaseModel):
    lines: list[Line]


class Receipt(BaseModel):
    order_id: str


def _apps(broker: dict[str, Any]) -> list[App]:
    shop, stock = App("shop", config={"broker": broker}), App("stock", config={"broker": broker})
    shop.publishes("orders", type="shop.order.placed", data=Order)
    shop.publishes("baskets", type="shop.basket.filled", data=Basket)

    @stock.subscribe("orders", type=["shop.order.placed", "shop.order.cancelled"])
    async def on_order(order: Order, event: Event) -> None: ...

    @stock.method("reserve")
    async def reserve(order: Order) -> Receipt:
        return Receipt(order_id=order.id)

    return [shop, stock]


@pytest.mark.parametrize("broker", ["kafka", "rabbitmq", "nats", "redis", "memory"])
def test_the_document_of_apps_validates_and_names_what_they_do(broker: str) -> None:
    url = {"kafka": "127.0.0.1:9092"}.get(broker, DEFAULT_URLS.get(broker))
    doc = app_document(_apps({"type": broker, "url": url} if broker != "memory" else {"type": "memory"}))
    validate(doc)
    assert doc["asyncapi"] == "3.0.0"
    orders = doc["channels"]["orders"]
    assert orders["address"] == "orders"
    assert set(orders["messages"]) == {"shop.order.placed", "shop.order.cancelled"}
    assert orders["messages"]["shop.order.placed"]["payload"] == {"$ref": "#/components/schemas/Order"}
    assert doc["components"]["schemas"]["Basket"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    ops = doc["operations"]
    assert ops["shop.publish.shop.order.placed"]["action"] == "send"
    assert ops["stock.on_order"]["action"] == "receive"
    reply = ops["stock.invoke.reserve"]["reply"]
    assert reply["messages"][0]["$ref"].endswith("stock.reserve.reply")
    prefix = "ce-" if broker in ("rabbitmq", "nats") else "ce_"
    assert reply["address"]["location"] == f"$message.header#/{prefix}meshreplyto"
    assert f"{prefix}type" in orders["messages"]["shop.order.placed"]["headers"]["properties"]
    if broker == "kafka":
        assert orders["bindings"]["kafka"]["topic"] == "orders"
        assert ops["stock.on_order"]["bindings"]["kafka"]["groupId"] == {"type": "string", "enum": ["stock"]}
        assert doc["servers"]["kafka"] == {"host": "127.0.0.1:9092", "protocol": "kafka"}
    if broker == "rabbitmq":
        assert orders["bindings"]["amqp"]["exchange"]["type"] == "topic"
        assert doc["servers"]["rabbitmq"]["host"] == "127.0.0.1:5672"  # no credentials


def test_the_shop_demo_document_from_the_command_validates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "asyncapi", str(ROOT / "examples" / "shop.py") + ":build"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    validate(doc)
    assert "orders.invoke.reserve" not in doc["operations"]
    assert doc["operations"]["inventory.invoke.reserve"]["reply"]
    assert {"shop.order.placed", "shop.order.confirmed", "shop.order.cancelled"} <= set(doc["channels"]["orders"]["messages"])


@pytest.mark.nats
@pytest.mark.timeout(60)
async def test_live_document_from_presence_heartbeats_carries_what_apps_publish(tmp_path: Path) -> None:
    namespace = unique("aa") + "."
    broker = {"type": "nats", "url": DEFAULT_URLS["nats"], "namespace": namespace}
    apps = _apps(broker)
    conf = tmp_path / "mesh.yaml"
    conf.write_text(yaml.safe_dump({"broker": broker, "presence": {"interval": 0.5}}))
    async with apps[0], apps[1]:
        listener = App("listener", config={"broker": broker})
        async with listener:
            await listener.presence.listen()
            await wait_for(lambda: {"shop", "stock"} <= set(listener.presence.apps()), what="both apps' heartbeats")
            doc = live_document(listener.presence.apps(), "nats", DEFAULT_URLS["nats"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh.cli", "asyncapi", "--live", "--wait", "1.5", "--format", "json",
            "-c", str(conf), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    validate(doc)
    assert doc["operations"]["shop.publish.shop.order.placed"]["action"] == "send"
    assert doc["operations"]["stock.invoke.reserve"]["reply"]
    assert doc["channels"]["orders"]["address"] == "orders"
    assert proc.returncode == 0, err.decode()
    from_cli = json.loads(out)
    validate(from_cli)
    assert {"shop.publish.shop.basket.filled", "stock.invoke.reserve"} <= set(from_cli["operations"])
