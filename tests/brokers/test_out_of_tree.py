"""A broker type from outside the repository: registered by a plugin, named in YAML, held to the contract.

The adapter below is what a third-party package would ship: four methods, a delivery with
``_ack`` and ``_requeue``, an options model with one field. It proves itself with the checks of
:mod:`mesh.testing.brokers` (those its ``Features`` allow).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mesh import App, Event, hookimpl
from mesh.brokers import Broker, BrokerInfo, BrokerOptions, Delivery, DeliveryHandler, Features, Subscription
from mesh.components import Registry
from mesh.testing.brokers import CONTRACT, ContractCheck, FeatureMissing
from tests.support import connected, unique, wait_for

pytestmark = pytest.mark.timeout(60)


class LoopbackOptions(BrokerOptions):
    """``broker.options`` of the loopback broker."""

    hub: str = "default"


class _Group:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Event, int]] = asyncio.Queue()


_HUBS: dict[str, dict[str, dict[str, _Group]]] = {}  # hub -> topic -> group -> queue


class LoopbackDelivery(Delivery):
    __slots__ = ("_sub",)

    def __init__(self, sub: LoopbackSubscription, event: Event, attempt: int) -> None:
        super().__init__(sub.topic, sub.group, event, attempt=attempt)
        self._sub = sub
        sub.held.add(self)

    async def _ack(self) -> None:
        self._sub.held.discard(self)

    async def _requeue(self) -> None:
        self._sub.held.discard(self)
        assert self.event is not None
        self._sub.state.queue.put_nowait((self.event, self.attempt + 1))


class LoopbackSubscription(Subscription):
    def __init__(self, topic: str, group: str, state: _Group, handler: DeliveryHandler, concurrency: int) -> None:
        self.topic, self.group, self.state, self.handler = topic, group, state, handler
        self.held: set[LoopbackDelivery] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(concurrency)
        self.loop = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            await self.slots.acquire()
            event, attempt = await self.state.queue.get()
            task = asyncio.get_running_loop().create_task(self._handle(LoopbackDelivery(self, event, attempt)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _handle(self, delivery: LoopbackDelivery) -> None:
        try:
            await self.handler(delivery)
        finally:
            self.slots.release()

    async def stop(self, drain: bool = True) -> None:
        self.loop.cancel()
        if drain and self.tasks:
            await asyncio.wait(list(self.tasks))
        for task in list(self.tasks):
            task.cancel()
        for delivery in list(self.held):  # never ended: back to the group, as a broker does for a gone consumer
            await delivery.nack()


class LoopbackBroker(Broker):
    """An in-process broker a plugin adds: competing consumers per group, fan-out between groups."""

    type: ClassVar[str] = "loopback"
    features: ClassVar[Features] = Features(name="loopback", consumer_groups=True)
    options_model = LoopbackOptions

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.topics = _HUBS.setdefault(self.settings.hub, {})
        self.subs: list[LoopbackSubscription] = []

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        for sub in self.subs:
            await sub.stop(drain=True)

    async def publish(self, topic: str, event: Event) -> None:
        for group in self.topics.setdefault(self.name_of(topic), {}).values():
            group.queue.put_nowait((event, 1))

    async def subscribe(
        self, topic: str, group: str, handler: DeliveryHandler, *, concurrency: int = 1
    ) -> Subscription:
        state = self.topics.setdefault(self.name_of(topic), {}).setdefault(group, _Group())
        sub = LoopbackSubscription(topic, group, state, handler, concurrency)
        self.subs.append(sub)
        return sub


class LoopbackPlugin:
    """What the outside package registers (through the ``mesh`` entry-point group, or ``App(plugins=...)``)."""

    @hookimpl
    def mesh_register_components(self, registry: Registry) -> None:
        registry.add_broker(BrokerInfo(type="loopback", target=LoopbackBroker, options=LoopbackOptions))


async def test_app_from_yaml_runs_on_a_plugin_broker(tmp_path: Path) -> None:
    hub = unique("hub")
    config = tmp_path / "mesh.yaml"
    config.write_text(f"broker:\n  type: loopback\n  options:\n    hub: {hub}\n")
    app = App("loop", config=str(config), plugins=[LoopbackPlugin()])
    seen: list[Any] = []

    @app.subscribe("greetings", type="hello")
    async def on_hello(event: Event) -> None:
        seen.append(event.data)

    async with app:
        assert isinstance(app.broker, LoopbackBroker) and app.broker.settings.hub == hub
        await app.publish("greetings", {"name": "Ada"}, type="hello")
        await wait_for(lambda: seen == [{"name": "Ada"}], what="the event handled over the plugin broker")


def test_unknown_option_of_a_plugin_broker_is_a_config_error(tmp_path: Path) -> None:
    from mesh.errors import ConfigError

    config = tmp_path / "mesh.yaml"
    config.write_text("broker:\n  type: loopback\n  options:\n    hubb: x\n")
    with pytest.raises(ConfigError, match="hubb"):
        App("loop", config=str(config), plugins=[LoopbackPlugin()])


@pytest.fixture
async def make_loopback() -> AsyncIterator[Callable[..., Any]]:
    hub = unique("hub")
    async for factory in connected(lambda **options: LoopbackBroker(None, options={"hub": hub, **options})):
        yield factory
    _HUBS.pop(hub, None)


@pytest.mark.parametrize("check", [c for c in CONTRACT if c.applies(LoopbackBroker.features)], ids=str)
async def test_contract_of_the_plugin_broker(check: ContractCheck, make_loopback: Callable[..., Any]) -> None:
    try:
        await check.run(make_loopback, unique)
    except FeatureMissing as exc:  # pragma: no cover - filtered by applies()
        pytest.skip(str(exc))
