"""A worked example plugin: stamp every event with a tenant, and never retry a bad-request error.

Register it in code (``App(..., plugins=[TenantPlugin("acme")])``) or, in a package of its own,
through an entry point so every app picks it up::

    # pyproject.toml of your plugin's distribution
    [project.entry-points.mesh]
    tenant = "my_package.tenant_plugin:plugin"

Run this file to watch it work on the in-process broker: ``python examples/plugin_tenant.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh import App, Context, Decision, Event, Runtime, hookimpl


class BadRequest(Exception):
    """A caller's mistake: retrying will not help."""


class TenantPlugin:
    """Adds ``tenant`` to every event an app publishes, and dead-letters BadRequest at once."""

    name = "tenant"

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    @hookimpl
    def mesh_publish_attributes(self, runtime: Runtime, topic: str, event: Event) -> dict[str, Any]:
        return {"tenant": self.tenant}

    @hookimpl
    def mesh_retry_decision(self, context: Context, error: BaseException) -> Decision | None:
        if isinstance(error, BadRequest):
            return Decision.dead_letter(f"bad request, not retried: {error}")
        return None  # let the built-in retry plugin decide


plugin = TenantPlugin("acme")
"""What an entry point would name."""


async def main() -> list[str]:
    app = App("billing", config={"broker": {"type": "memory", "options": {"name": "plugin-demo"}}}, plugins=[plugin])
    log: list[str] = []

    @app.subscribe("invoices")
    async def bill(event: Event) -> None:
        if event.data["amount"] < 0:
            raise BadRequest("negative amount")
        log.append(f"billed {event.data['amount']} for tenant {event.extensions['tenant']}")

    async with app:
        await app.publish("invoices", {"amount": 42}, type="billing.invoice.created")
        await app.publish("invoices", {"amount": -1}, type="billing.invoice.created")
        await app.join()
    for dead in app.broker.dead_letters("invoices"):  # type: ignore[attr-defined]
        log.append(f"dead-lettered: {dead.extensions['mesherror']}")
    return log


if __name__ == "__main__":
    for line in asyncio.run(main()):
        print(line)
