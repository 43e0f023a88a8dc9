"""Bulk publish and a batch subscription (docs/batches.md): ``python examples/batches.py``.

The ledger app takes orders in batches of up to 100 (or whatever arrived within 50 ms); an order
with a negative amount is reported as failed and dead-lettered on its own, the rest are acked.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel

from mesh import App, BatchFailed, BatchPolicy, DeadLetter, Event

CONFIG = {"broker": {"type": "memory", "options": {"name": "example-batches"}}}


class Order(BaseModel):
    id: str
    amount: int


ledger = App("ledger", config=CONFIG)
shop = App("shop", config=CONFIG)
booked: list[str] = []
dead: list[str] = []


@ledger.subscribe("orders", batch=BatchPolicy(max_size=100, max_wait=timedelta(milliseconds=50)))
async def book(orders: list[Order]) -> None:
    failed: dict[int, BaseException] = {}
    for index, order in enumerate(orders):
        if order.amount < 0:
            failed[index] = DeadLetter(f"negative amount {order.amount}")
        else:
            booked.append(order.id)  # one database write for the whole batch would go here
    if failed:
        raise BatchFailed(failed)  # only these are dead-lettered; the others are acked


@ledger.subscribe("orders.dlq")
async def on_dead_letter(event: Event) -> None:
    dead.append(event.data["id"])


async def main() -> tuple[int, int, list[str]]:
    async with ledger, shop:
        orders = [Order(id=f"o{i}", amount=-1 if i == 7 else i) for i in range(250)]
        result = await shop.publish_many("orders", orders, type="shop.order.created", key=lambda o: o.id)
        result.raise_for_failures()  # or look at result.failed: index, event, error of each
        await ledger.join()
    return len(result.events), len(booked), dead


if __name__ == "__main__":
    sent, booked_count, dead_letters = asyncio.run(main())
    print(f"sent {sent}, booked {booked_count}, dead-lettered {dead_letters}")
