"""Names that work on every broker, and handler signatures checked at decoration time."""

from __future__ import annotations

import doctest
import threading
from typing import Any

import pytest
from pydantic import BaseModel

import mesh.names
from mesh import Context, Event
from mesh.names import (
    InvalidHandler,
    InvalidName,
    check_app_id,
    check_group,
    check_handler_signature,
    check_subscription,
    check_topic,
)


@pytest.mark.parametrize(
    "name", ["orders", "shop.order.created", "billing-v2", "a_b", "A1", "x" * 249, "tenant-7.orders_eu"]
)
def test_names_valid_on_every_broker_pass(name: str) -> None:
    assert check_topic(name) == name
    assert check_group(name) == name
    assert check_app_id(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("billing service", "' ' is not allowed"),  # NATS subjects and RabbitMQ (by the mesh's names) refuse it
        ("orders.*", "'\\*' is not allowed"),  # a NATS wildcard
        ("orders.>", "'>' is not allowed"),  # a NATS wildcard
        ("orders..created", "empty part"),  # an empty NATS token
        (".orders", "empty part"),
        ("orders.", "empty part"),
        ("ordres/eu", "'/' is not allowed"),  # Kafka's character set, JetStream's stream names
        ("bestellungen-ü", "'ü' is not allowed"),  # Kafka's character set
        ("x" * 250, "over 249"),  # Kafka's length
        ("_mesh.retry", "reserved for the mesh"),
        ("amq.orders", "reserved by RabbitMQ"),
        ("", "non-empty"),
    ],
)
def test_names_that_fail_on_some_broker_are_refused(name: str, why: str) -> None:
    for check in (check_topic, check_group, check_app_id):
        with pytest.raises(InvalidName, match=why):
            check(name)


def test_invalid_name_is_a_value_error_and_names_the_kind() -> None:
    with pytest.raises(ValueError, match=r"^app id 'billing service' cannot be used on every broker"):
        check_app_id("billing service")


def test_namespace_counts_towards_kafka_length() -> None:
    check_topic("x" * 240, namespace="shop.")
    with pytest.raises(InvalidName, match="over 244"):
        check_topic("x" * 245, namespace="shop.")


def test_subscription_checks_the_names_brokers_derive() -> None:
    check_subscription("orders", "billing")
    with pytest.raises(InvalidName, match="retry topic"):
        check_subscription("t" * 120, "g" * 120)  # each fine alone; _mesh.retry.<g>.<t> is 253
    with pytest.raises(InvalidName, match="group"):
        check_subscription("orders", "bad group")


def test_module_examples_run() -> None:
    result = doctest.testmod(mesh.names)
    assert result.failed == 0 and result.attempted > 0


class Order(BaseModel):
    id: str


def test_handlers_the_mesh_can_fill_pass() -> None:
    async def typed(order: Order, event: Event, ctx: Context) -> None: ...
    async def plain(event) -> None: ...  # type: ignore[no-untyped-def]
    async def e_only(e, ctx: Context) -> None: ...  # type: ignore[no-untyped-def]
    async def data_any(data: Any, ev: Event) -> None: ...
    async def untyped_data(payload) -> None: ...  # type: ignore[no-untyped-def]
    def sync_dict(data: dict[str, int], *args: Any, **kwargs: Any) -> None: ...
    async def nothing() -> None: ...

    for fn in (typed, plain, e_only, data_any, untyped_data, sync_dict, nothing):
        check_handler_signature(fn)


def test_second_data_parameter_is_refused_at_decoration() -> None:
    async def handler(order: Order, db: Any) -> None: ...

    with pytest.raises(InvalidHandler, match=r"parameters 'order', 'db' would each get the event data"):
        check_handler_signature(handler)


def test_positional_only_parameter_is_refused() -> None:
    async def handler(event: Event, /) -> None: ...

    with pytest.raises(InvalidHandler, match="positional-only"):
        check_handler_signature(handler)


def test_data_type_pydantic_cannot_validate_is_refused() -> None:
    async def handler(lock: threading.Lock) -> None: ...  # type: ignore[valid-type]

    with pytest.raises(InvalidHandler, match="parameter 'lock': the event data cannot be validated"):
        check_handler_signature(handler)


def test_invalid_handler_is_a_type_error() -> None:
    async def handler(a: int, b: int) -> None: ...

    with pytest.raises(TypeError):
        check_handler_signature(handler)
