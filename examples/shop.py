"""A small shop as three services on one mesh: orders, inventory and notifications.

Run it on the in-process broker (the default)::

    python examples/shop.py

or unchanged on any broker by config::

    python examples/shop.py --config examples/config/rabbitmq.yaml

Orders are placed as events; the orders service takes each one and *invokes* inventory's
``reserve`` method (request/reply over the broker), which answers with the reservation or fails
with an ``out_of_stock`` error; orders then publishes the order confirmed or cancelled, and
notifications e-mails the customer. Its mail server fails now and then, so you can watch retries
work. It exits 0 once every order has been settled and notified (``--serve`` keeps the services
running until Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from mesh import App, Context, RemoteError

console = Console(highlight=False)
COLORS = {"orders": "cyan", "inventory": "magenta", "notifications": "green", "mesh": "bright_black"}


def say(service: str, text: str) -> None:
    """One line of the story, coloured by service."""
    console.print(f"[{COLORS.get(service, 'white')}]{service:>13}[/] │ {text}")


# -- the events (typed data) ------------------------------------------------------------------


class Order(BaseModel):
    id: str
    customer: str
    sku: str
    qty: int


class Reservation(BaseModel):
    order_id: str
    sku: str
    qty: int
    left: int


class OutOfStock(Exception):
    """Raised by inventory's ``reserve``: callers get a RemoteError with this code."""

    code = "out_of_stock"


class Outcome(BaseModel):
    order_id: str
    customer: str
    status: str


CATALOG = {"espresso": 5, "flat-white": 3, "cortado": 2}
ORDERS = [
    Order(id=f"A{i:02d}", customer=customer, sku=sku, qty=qty)
    for i, (customer, sku, qty) in enumerate(
        [
            ("ada", "espresso", 2),
            ("grace", "flat-white", 1),
            ("linus", "cortado", 2),
            ("barbara", "espresso", 2),
            ("ken", "cortado", 1),
            ("margaret", "flat-white", 2),
            ("dennis", "espresso", 3),
        ],
        start=1,
    )
]


def build(config: Any = None) -> tuple[App, App, App, dict[str, Any]]:
    """The three services and a shared record of what happened (for the summary and tests)."""
    orders, inventory, notifications = (App(name, config=config) for name in ("orders", "inventory", "notifications"))
    stock = dict(CATALOG)
    seen: dict[str, Any] = {"outcomes": {}, "mails": Counter(), "bounces": 0, "done": asyncio.Event()}
    customers: dict[str, str] = {}

    @inventory.method("reserve")
    async def reserve(order: Order) -> Reservation:
        left = stock.get(order.sku, 0)
        if left < order.qty:
            say("inventory", f"[red]✗[/] {order.id}: only {left} {order.sku} left, {order.qty} wanted")
            raise OutOfStock(f"only {left} {order.sku} left")
        stock[order.sku] = left - order.qty
        say("inventory", f"reserved {order.qty} × {order.sku} for {order.id} ({stock[order.sku]} left)")
        return Reservation(order_id=order.id, sku=order.sku, qty=order.qty, left=stock[order.sku])

    @orders.subscribe("orders", type="shop.order.placed")
    async def settle(order: Order) -> None:
        try:  # a question that needs an answer now: request/reply
            await orders.invoke("inventory", "reserve", order, result_type=Reservation, timeout=30)
            status, mark = "confirmed", "[green]✓[/]"
        except RemoteError as error:
            if error.code != OutOfStock.code:
                raise  # anything else: the retry plugin tries the order again
            status, mark = "cancelled", "[red]✗[/]"
        say("orders", f"{mark} order {order.id} {status}")
        await orders.publish(
            "orders",
            Outcome(order_id=order.id, customer=order.customer, status=status),
            type=f"shop.order.{status}",
            key=order.id,
        )

    @notifications.subscribe("orders", type=["shop.order.confirmed", "shop.order.cancelled"])
    async def mail(outcome: Outcome, ctx: Context) -> None:
        # the mail server bounces the first try for every third order: the retry plugin retries
        if int(outcome.order_id[1:]) % 3 == 0 and ctx.attempt == 1:
            seen["bounces"] += 1
            say("notifications", f"[yellow]↻[/] mail server busy for {outcome.order_id}, will retry")
            raise ConnectionError("mail server busy")
        verb = "is on its way" if outcome.status == "confirmed" else "could not be filled, sorry"
        retried = f" [bright_black](attempt {ctx.attempt})[/]" if ctx.attempt > 1 else ""
        say("notifications", f"✉  to {outcome.customer}: your order {outcome.order_id} {verb}{retried}")
        seen["mails"][outcome.status] += 1
        seen["outcomes"][outcome.order_id] = outcome.status
        if len(seen["outcomes"]) == len(customers):
            seen["done"].set()

    seen["customers"] = customers
    return orders, inventory, notifications, seen


async def main(config: Any = None, serve: bool = False, timeout: float = 60.0, pace: float = 0.0) -> dict[str, Any]:
    """Run the story; returns what happened."""
    orders, inventory, notifications, seen = build(config)
    broker = orders.config.broker
    say("mesh", f"three services on the [bold]{broker.type}[/] broker" + (f" at {broker.url}" if broker.url else ""))
    async with notifications, inventory, orders:
        for order in ORDERS:
            seen["customers"][order.id] = order.customer
            say("orders", f"placed {order.id}: {order.qty} × {order.sku} for {order.customer}")
            # keyed by product: orders for one product keep their order on every broker, so who
            # gets the last cortado does not depend on which partition was read first
            await orders.publish("orders", order, type="shop.order.placed", key=order.sku)
            await asyncio.sleep(pace)
        await asyncio.wait_for(seen["done"].wait(), timeout)
        mails = seen["mails"]
        say(
            "mesh",
            f"[bold]{len(ORDERS)} orders: {mails['confirmed']} confirmed, {mails['cancelled']} cancelled; "
            f"{seen['bounces']} mail(s) retried[/]",
        )
        if serve:
            say("mesh", "serving; Ctrl-C to stop")
            await asyncio.Event().wait()
    return seen


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="mesh config file (default: $MESH_CONFIG, ./mesh.yaml, else memory)")
    parser.add_argument("--serve", action="store_true", help="keep serving after the story")
    parser.add_argument("--pace", type=float, default=0.15, help="seconds between orders (0 for full speed)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the story to finish")
    args = parser.parse_args(argv)
    if args.config:
        os.environ["MESH_CONFIG"] = args.config
    try:
        asyncio.run(main(serve=args.serve, timeout=args.timeout, pace=args.pace))
    except KeyboardInterrupt:
        return 0
    except TimeoutError:
        console.print("[red]the story did not finish in time[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
