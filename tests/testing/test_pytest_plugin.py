"""The pytest plugin (entry point ``pytest11``): fixtures that run any App on a private memory hub,
under pytest-asyncio in strict and in auto mode."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SERVICE = """
from pydantic import BaseModel
from mesh import App, Event

class Order(BaseModel):
    id: str
    qty: int

app = App("billing", config={"broker": {"type": "rabbitmq", "url": "amqp://nobody:x@192.0.2.1:1/"}})
billed = []

@app.subscribe("orders", type="shop.order.*")
async def bill(order: Order, event: Event) -> None:
    if order.qty <= 0:
        raise ValueError("nothing to bill")
    receipt = await app.invoke("payments", "charge", {"id": order.id})
    billed.append((order.id, receipt))
    await app.publish("billed", {"id": order.id}, type="shop.order.billed")
"""

TESTS = """
import pytest
from service import app, billed

{mark}
async def test_handles_publishes_and_dead_letters(mesh):
    mesh.stub("payments", "charge", lambda data: {{"ok": data["id"]}})
    async with mesh.run(app):
        await mesh.publish("orders", {{"id": "A1", "qty": 2}}, type="shop.order.created")
        assert billed == [("A1", {{"ok": "A1"}})]
        assert [e.data for e in mesh.published("billed")] == [{{"id": "A1"}}]
        await mesh.publish("orders", {{"id": "A2", "qty": 0}}, type="shop.order.created")
        assert [e.data["id"] for e in mesh.dead_letters("orders")] == ["A2"]

{mark}
async def test_each_test_has_a_fresh_hub(mesh, mesh_hub):
    assert mesh.hub == mesh_hub
    assert mesh.published("billed") == []

def test_apps_built_during_the_test_use_the_hub(mesh):
    from mesh import App
    built = App("other", config={{"broker": {{"type": "kafka", "url": "192.0.2.1:9092"}}}})
    assert built.broker.type == "memory" and built.broker.hub_name == mesh.hub
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_plugin_works_in_both_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(service=SERVICE)
    mark = "@pytest.mark.asyncio" if mode == "strict" else ""
    pytester.makepyfile(test_service=TESTS.format(mark=mark))
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-o",
        f"asyncio_mode={mode}",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "-W",
        "error",
    )
    result.assert_outcomes(passed=3)
