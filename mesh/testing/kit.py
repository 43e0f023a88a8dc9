"""Testing your own service: run any App on a private in-process hub, whatever its config says.

:class:`MeshTestKit` is what the pytest fixture ``mesh`` hands a test (see docs/testing.md); it
works without pytest too. As FastStream's ``TestBroker`` patches a real broker, the kit swaps the
broker of each App it runs for a memory broker on the test's own hub, so a service configured for
Kafka is tested unchanged, in process, with nothing to start:

==================================  ===========================================================
call                                what it does
==================================  ===========================================================
``async with kit.run(app, ...)``    every app (and the stubs) on the hub, started; stopped after
``await kit.publish(topic, data,    publish as a client app would (inside ``run``), and by
type=...)``                         default wait until every running app handled everything
``await kit.settle()``              wait until every running app has handled everything
``kit.published(topic)``            the events on a topic, oldest first
``kit.dead_letters(topic)``         what was dead-lettered from ``topic`` (``<topic>.dlq``)
``kit.stub(app_id, method, fn)``    ``invoke(app_id, method)`` answers with ``fn(data)``
                                    (or a value; an exception becomes an error reply)
==================================  ===========================================================
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from mesh.app import App
from mesh.brokers.memory import MemoryBroker
from mesh.event import Event

__all__ = ["MeshTestKit"]


class MeshTestKit:
    """A private memory hub for one test, and helpers to drive and inspect apps on it."""

    def __init__(self, hub: str | None = None) -> None:
        self.hub = hub or f"mesh-test-{uuid.uuid4().hex[:12]}"
        """The memory hub name every app of this kit uses."""
        self._stubs: dict[str, App] = {}
        self._running: list[App] = []
        self._client: App | None = None
        self._view = MemoryBroker(None, options={"name": self.hub})

    def memory_config(self) -> dict[str, Any]:
        """A config dict putting an App built from it on this kit's hub."""
        return {"broker": {"type": "memory", "options": {"name": self.hub}}}

    def use(self, app: App) -> App:
        """Put a not yet started ``app`` on this kit's hub (its broker config is ignored)."""
        if app.started:
            raise RuntimeError(f"app {app.id!r} already started: hand it to the kit before starting it")
        broker = app.broker
        if not (isinstance(broker, MemoryBroker) and broker.hub_name == self.hub):
            app.use_broker(
                MemoryBroker(
                    None,
                    options={"name": self.hub},
                    content_mode=app.config.broker.content_mode,
                    namespace=app.config.broker.namespace,
                    client_id=app.instance_id,
                )
            )
        return app

    def stub(self, app_id: str, method: str, reply: Any) -> None:
        """Answer ``invoke(app_id, method, data)`` with ``reply(data)`` (a callable, maybe async) or ``reply``.

        An exception raised by ``reply`` reaches the caller as a :class:`~mesh.RemoteError`.
        Stubs start with :meth:`run`; add them before it.
        """
        app = self._stubs.get(app_id)
        if app is None:
            app = self._stubs[app_id] = App(app_id, config=self.memory_config())

        async def handler(data: Any) -> Any:
            if not callable(reply):
                return reply
            result = reply(data)
            return await result if inspect.isawaitable(result) else result

        handler.__name__ = method
        app.method(method)(handler)

    @asynccontextmanager
    async def run(self, *apps: App) -> AsyncIterator[MeshTestKit]:
        """Start the stubs, then ``apps`` on this hub; stop them all (in reverse) on leaving."""
        async with AsyncExitStack() as stack:
            client = App("mesh-test-client", config=self.memory_config())
            for app in [*self._stubs.values(), *apps, client]:
                self.use(app)
                await stack.enter_async_context(app)
                self._running.append(app)
                stack.callback(self._running.remove, app)
            self._client = client
            stack.callback(setattr, self, "_client", None)
            yield self

    async def publish(self, topic: str, data: Any = None, *, type: str, wait: bool = True, **kwargs: Any) -> Event:
        """Publish as a client app would (``App.publish`` arguments); with ``wait``, :meth:`settle` after."""
        client = self._client
        if client is None:
            raise RuntimeError("publish inside `async with kit.run(app, ...)`: nothing runs to handle it")
        event = await client.publish(topic, data, type=type, **kwargs)
        if wait:
            await self.settle()
        return event

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every app started by :meth:`run` has handled everything (retries included)."""
        for _ in range(2):  # a handler may publish to another running app: look twice
            for app in list(self._running):
                await app.join(timeout=timeout)

    def published(self, topic: str) -> list[Event]:
        """The events on ``topic`` of this hub, oldest first."""
        return self._view.messages(topic)

    def dead_letters(self, topic: str, suffix: str = ".dlq") -> list[Event]:
        """The events dead-lettered from ``topic`` (on ``<topic><suffix>``)."""
        return self._view.dead_letters(topic, suffix)

    def close(self) -> None:
        """Forget the hub's topics (apps are stopped by :meth:`run`)."""
        MemoryBroker.reset(self.hub)


def memory_factory(hub: Callable[[], str]) -> Callable[..., MemoryBroker]:
    """A broker factory that builds a memory broker on ``hub()`` whatever URL and options it gets."""

    def make(url: str | None = None, **kwargs: Any) -> MemoryBroker:
        kwargs["options"] = {"name": hub()}
        return MemoryBroker(None, **kwargs)

    return make
