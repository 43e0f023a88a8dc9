"""A FastAPI front door on the mesh: endpoints publish events and invoke other apps' methods.

Serve it with any ASGI server (``uvicorn examples.fastapi_app:api``), or run this file: it starts
the web app's lifespan in-process and places two orders through httpx's ASGI transport, then
exits 0. The inventory service runs in the same process here; on a real broker it is its own
``mesh run`` deployment, and nothing in the web code changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from mesh import App, RemoteError
from mesh.integrations.fastapi import MeshApp, mesh_lifespan


class Order(BaseModel):
    id: str
    sku: str
    qty: int


class Receipt(BaseModel):
    order_id: str
    left: int


def build(config: Any = None) -> tuple[FastAPI, App, App]:
    """The web app, its mesh App ("web") and the inventory App it invokes."""
    web = App("web", config=config)
    inventory = App("inventory", config=config)
    stock = {"apple": 5}

    @inventory.method("reserve")
    async def reserve(order: Order) -> Receipt:
        if stock.get(order.sku, 0) < order.qty:
            raise ValueError(f"only {stock.get(order.sku, 0)} {order.sku} left")
        stock[order.sku] -= order.qty
        return Receipt(order_id=order.id, left=stock[order.sku])

    api = FastAPI(lifespan=mesh_lifespan(web, inventory))

    @api.post("/orders")
    async def place(order: Order, mesh: MeshApp) -> Receipt:
        try:
            receipt = await mesh.invoke("inventory", "reserve", order, result_type=Receipt)
        except RemoteError as exc:
            raise HTTPException(409, str(exc)) from exc
        await mesh.publish("orders", order, type="shop.order.placed", key=order.sku)
        return receipt

    return api, web, inventory


api, web, inventory = build()


async def main(config: Any = None) -> list[tuple[int, Any]]:
    """Place two orders (the second one too big) and return (status, body) of each."""
    app, _, _ = build(config) if config is not None else (api, web, inventory)
    out = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            for order in ({"id": "A1", "sku": "apple", "qty": 3}, {"id": "A2", "sku": "apple", "qty": 3}):
                response = await client.post("/orders", json=order)
                out.append((response.status_code, response.json()))
                print(response.status_code, response.json())
    return out


if __name__ == "__main__":
    asyncio.run(main())
