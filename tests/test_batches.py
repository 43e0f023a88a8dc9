"""publish_many and batch subscriptions on the memory broker: input checks, plugins, handler plans.

The broker side (every adapter's ``publish_many``, batch subscribe with partial failure) is in
the contract suite (:mod:`mesh.testing.batches`, run by tests/brokers/test_contract.py).
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from mesh import App, ConfigError, Context, Event, MeshError, hookimpl
from mesh.batch import MAX_BATCH_SIZE, BatchPolicy, PublishResult
from mesh.errors import BatchFailed, EncodeError, InvalidHandler, PublishError
from mesh.runtime import Runtime
from mesh.types import Publish, PublishLayer
from tests.support import fast_retry_hub, wait_for


class Order(BaseModel):
    id: str
    qty: int


@pytest.fixture
def cfg() -> Any:
    yield from fast_retry_hub("batches")


# -- BatchPolicy -------------------------------------------------------------------------------


@given(size=st.integers(1, MAX_BATCH_SIZE), ms=st.floats(0, 300_000, allow_nan=False))
def test_batch_policy_takes_every_sensible_size_and_wait(size: int, ms: float) -> None:
    policy = BatchPolicy(max_size=size, max_wait=timedelta(milliseconds=ms))
    assert policy.max_size == size
    assert math.isclose(policy.seconds, timedelta(milliseconds=ms).total_seconds())
    assert BatchPolicy(max_size=size, max_wait=ms / 1000).seconds == pytest.approx(ms / 1000)


@given(
    size=st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_BATCH_SIZE + 1), st.booleans(),
                   st.floats(), st.text(max_size=3), st.none()),
)
def test_batch_policy_refuses_a_bad_size_with_its_path(size: Any) -> None:
    with pytest.raises(ConfigError, match=r"batch\.max_size"):
        BatchPolicy(max_size=size)


@given(
    wait=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=300.001), st.just(math.nan),
                   st.text(max_size=3), st.none(), st.booleans()),
)
def test_batch_policy_refuses_a_bad_wait_with_its_path(wait: Any) -> None:
    with pytest.raises(ConfigError, match=r"batch\.max_wait"):
        BatchPolicy(max_wait=wait)


# -- publish_many: input -----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(JSON, max_size=30))
async def test_publish_many_sends_any_json_items_in_order(cfg: dict[str, Any], items: list[Any]) -> None:
    got: list[Any] = []
    app = App("bulk", config=cfg)

    @app.subscribe("items")
    async def handle(event: Event) -> None:
        got.append(event.data)

    async with app:
        result = await app.publish_many("items", items, type="item")
        assert result.ok and [e.data for e in result.events] == items
        await wait_for(lambda: len(got) == len(items), what="every item")
    assert got == items


@pytest.mark.parametrize("items", ["abc", b"abc", {"a": 1}, 42, None])
async def test_publish_many_refuses_what_is_not_a_list_of_items(cfg: dict[str, Any], items: Any) -> None:
    async with App("bulk", config=cfg) as app:
        with pytest.raises(TypeError, match="list of items"):
            await app.publish_many("items", items, type="item")


async def test_publish_many_needs_a_type_for_plain_data_but_sends_events_as_they_are(cfg: dict[str, Any]) -> None:
    async with App("bulk", config=cfg) as app:
        with pytest.raises(MeshError, match="type="):
            await app.publish_many("items", [Event("t", "/s", 1), 2])
        ready = [Event("made", "/elsewhere", {"n": 1}), Event("made", "/elsewhere", {"n": 2})]
        result = await app.publish_many("items", ready)
        assert result.ok and [e.id for e in result.events] == [e.id for e in ready]
        assert result.events[0].source == "/elsewhere"


async def test_publish_many_key_is_one_for_all_or_one_per_item(cfg: dict[str, Any]) -> None:
    async with App("bulk", config=cfg) as app:
        same = await app.publish_many("items", [1, 2], type="n", key="k")
        assert [e.extensions["partitionkey"] for e in same.events] == ["k", "k"]
        each = await app.publish_many("items", [{"id": "a"}, {"id": "b"}, {}], type="n", key=lambda d: d.get("id"))
        assert [e.extensions.get("partitionkey") for e in each.events] == ["a", "b", None]


async def test_an_oversized_item_fails_alone_and_raise_for_failures_names_it(cfg: dict[str, Any]) -> None:
    cfg = {**cfg, "max_event_bytes": 1024}
    got: list[Any] = []
    app = App("bulk", config=cfg)

    @app.subscribe("items")
    async def handle(event: Event) -> None:
        got.append(event.data)

    async with app:
        result = await app.publish_many("items", ["small", "x" * 5000, "also small"], type="s")
        assert not result.ok
        assert [f.index for f in result.failed] == [1]
        assert isinstance(result.failed[0].error, EncodeError)
        with pytest.raises(PublishError, match="1 of 3 event"):
            result.raise_for_failures()
        await wait_for(lambda: len(got) == 2, what="the two small events")
    assert got == ["small", "also small"]


# -- publish_many: plugins see each event ------------------------------------------------------


class Refuser:
    """A publish layer that counts every event and refuses those whose data is "bad"."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def mesh_publish_layers(self, runtime: Runtime) -> PublishLayer:
        def layer(next_: Publish) -> Publish:
            async def publish(topic: str, event: Event) -> None:
                self.seen.append(event.data)
                if event.data == "bad":
                    raise PublishError("refused by the test layer")
                await next_(topic, event.with_extensions(layered="yes"))

            return publish

        return layer

    @hookimpl
    def mesh_publish_attributes(self, runtime: Runtime, topic: str, event: Event) -> dict[str, str]:
        return {"tenant": "acme"}


async def test_publish_layers_and_attributes_apply_to_each_event(cfg: dict[str, Any]) -> None:
    plugin = Refuser()
    got: list[Event] = []
    app = App("bulk", config=cfg, plugins=[plugin])

    @app.subscribe("items")
    async def handle(event: Event) -> None:
        got.append(event)

    async with app:
        result = await app.publish_many("items", ["a", "bad", "b", "c"], type="s")
        assert [f.index for f in result.failed] == [1]
        assert "refused by the test layer" in str(result.failed[0].error)
        assert all(e.extensions["tenant"] == "acme" for e in result.events)
        await wait_for(lambda: len(got) == 3, what="three events")
    assert plugin.seen == ["a", "bad", "b", "c"]
    assert [e.data for e in got] == ["a", "b", "c"]
    assert all(e.extensions["layered"] == "yes" and e.extensions["tenant"] == "acme" for e in got)


async def test_a_broker_refusing_the_whole_call_fails_every_event(cfg: dict[str, Any]) -> None:
    async with App("bulk", config=cfg) as app:

        async def broken(topic: str, events: Any) -> dict[int, Exception]:
            raise PublishError("the broker went away")

        app.broker.publish_many = broken  # type: ignore[method-assign]
        result = await app.publish_many("items", [1, 2, 3], type="n")
        assert isinstance(result, PublishResult)
        assert [f.index for f in result.failed] == [0, 1, 2]


# -- batch subscribe: handler plans ------------------------------------------------------------


async def test_batch_handler_takes_models_contexts_or_plain_data(cfg: dict[str, Any]) -> None:
    app = App("bulk", config=cfg)
    models: list[Order] = []
    contexts: list[Context] = []
    plain: list[Any] = []
    policy = BatchPolicy(max_size=10, max_wait=timedelta(milliseconds=20))

    @app.subscribe("orders", batch=policy)
    async def as_models(orders: list[Order]) -> None:
        models.extend(orders)

    @app.subscribe("orders", group="ctx", batch=policy)
    async def as_contexts(batch: list[Context]) -> None:
        contexts.extend(batch)

    @app.subscribe("orders", group="plain", batch=policy)
    def as_data(batch) -> None:  # type: ignore[no-untyped-def]  # a sync handler, unannotated: data
        plain.extend(batch)

    async with app:
        await app.publish_many("orders", [{"id": str(i), "qty": i} for i in range(5)], type="order")
        await wait_for(lambda: len(models) == len(contexts) == len(plain) == 5, what="three batches")
    assert [o.qty for o in models] == list(range(5))
    assert [c.event.data["qty"] for c in contexts if c.event is not None] == list(range(5))
    assert contexts[0].group == "ctx"
    assert plain[0] == {"id": "0", "qty": 0}


def _two(a: list[Event], b: list[Event]) -> None: ...
def _not_a_list(events: Event) -> None: ...
def _dict(events: dict[str, int]) -> None: ...


@pytest.mark.parametrize("fn", [_two, _not_a_list, _dict])
def test_a_batch_handler_that_does_not_take_one_list_is_refused_at_registration(cfg: dict[str, Any], fn: Any) -> None:
    app = App("bulk", config=cfg)
    with pytest.raises(InvalidHandler, match="batch handler"):
        app.subscribe("orders", batch=BatchPolicy())(fn)


def test_batch_is_a_policy_and_not_for_actor_routing(cfg: dict[str, Any]) -> None:
    app = App("bulk", config=cfg)
    with pytest.raises(TypeError, match="BatchPolicy"):
        app.subscribe("orders", batch=500)  # type: ignore[arg-type]
    with pytest.raises(MeshError, match="actor"):
        app.subscribe("orders", actor="Cart", batch=BatchPolicy())


async def test_batch_failed_indexes_outside_the_batch_are_ignored(cfg: dict[str, Any],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    app = App("bulk", config=cfg)
    outcomes: list[str] = []

    class Outcomes:
        @hookimpl
        def mesh_delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
            outcomes.append(outcome)

    app.plugins.register(Outcomes())

    @app.subscribe("orders", batch=BatchPolicy(max_size=3, max_wait=0.02))
    async def handle(events: list[Event]) -> None:
        raise BatchFailed({7: ValueError("no such item")})

    async with app:
        await app.publish_many("orders", [1, 2, 3], type="n")
        await wait_for(lambda: len(outcomes) == 3, what="three outcomes")
    assert outcomes == ["handled"] * 3
    assert "outside its batch" in caplog.text


async def test_a_batch_is_handed_over_when_full_or_when_its_time_is_up(cfg: dict[str, Any]) -> None:
    app = App("bulk", config=cfg)
    sizes: list[int] = []

    @app.subscribe("orders", batch=BatchPolicy(max_size=4, max_wait=timedelta(milliseconds=50)))
    async def handle(events: list[Event]) -> None:
        sizes.append(len(events))

    async with app:
        await app.publish_many("orders", list(range(10)), type="n")
        await wait_for(lambda: sum(sizes) == 10, what="ten events")
    assert sizes == [4, 4, 2]


class Joined:
    """Notes each delivery's data as it joins the open batch (a handler layer wraps the batch directly)."""

    def __init__(self) -> None:
        self.data: list[Any] = []

    @hookimpl
    def mesh_handler_layers(self, runtime: Runtime, subscription: Any) -> Any:
        def layer(next_: Any) -> Any:
            async def handle(ctx: Context) -> Any:
                assert ctx.event is not None
                self.data.append(ctx.event.data)
                return await next_(ctx)

            return handle

        return layer


async def test_stopping_hands_over_the_open_batch_at_once(cfg: dict[str, Any]) -> None:
    joined = Joined()
    app = App("bulk", config=cfg, plugins=[joined])
    got: list[int] = []

    @app.subscribe("orders", batch=BatchPolicy(max_size=100, max_wait=60))
    async def handle(events: list[Event]) -> None:
        got.extend(e.data for e in events)

    async with app:
        await app.publish_many("orders", [1, 2, 3], type="n")
        await wait_for(lambda: joined.data == [1, 2, 3], what="three deliveries in the open batch")
        assert got == []  # the open batch would wait a minute
    assert got == [1, 2, 3]  # the stop drained it: handled and acked, not left for redelivery


async def test_a_batch_of_one_is_drained_at_stop_too(cfg: dict[str, Any]) -> None:
    app = App("bulk", config=cfg)
    got: list[int] = []
    in_hand, release = asyncio.Event(), asyncio.Event()

    @app.subscribe("orders", batch=BatchPolicy(max_size=1, max_wait=0))
    async def handle(events: list[Event]) -> None:
        in_hand.set()
        await release.wait()
        got.extend(e.data for e in events)

    async with app:
        await app.publish_many("orders", [1], type="n")
        await in_hand.wait()
        asyncio.get_running_loop().call_later(0.05, release.set)  # once the stop waits for it
    assert got == [1]  # the stop waited for the batch in hand


def test_asyncapi_documents_one_item_of_a_batch_handler(cfg: dict[str, Any]) -> None:
    from mesh.asyncapi import app_document

    app = App("bulk", config=cfg)

    @app.subscribe("orders", batch=BatchPolicy())
    async def handle(orders: list[Order]) -> None: ...

    doc = str(app_document([app]))
    assert "Order" in doc and "'qty'" in doc
