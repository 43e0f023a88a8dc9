"""Fixtures of the bindings tests: the broker in between (memory and Redis), apps with bindings."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mesh import App, Event
from tests.support import DEFAULT_URLS, reachable, unavailable, unique

MQTT_URL = os.environ.get("MESH_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
PG_URL = os.environ.get("MESH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(
    params=[pytest.param("memory", marks=pytest.mark.memory), pytest.param("redis", marks=pytest.mark.redis)]
)
def broker(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``broker:`` section: the in-process broker, then the real Redis."""
    if request.param == "memory":
        return {"type": "memory", "options": {"name": unique("hub")}}
    url = os.environ.get("MESH_TEST_REDIS_URL", DEFAULT_URLS["redis"])
    if not reachable(url, 6379):
        unavailable(f"redis at {url}")
    return {"type": "redis", "url": url}


def need(url: str, port: int, what: str) -> None:
    """Skip locally, fail in CI, when a server the test needs is not there."""
    if not reachable(url, port):
        unavailable(f"{what} at {url}")


class Received:
    """Events a subscriber of a topic got."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def by_id(self) -> dict[str, Event]:
        """The events by id."""
        return {e.id: e for e in self.events}


MakeApp = Callable[..., Any]


@pytest.fixture
async def make_app(broker: dict[str, Any]) -> AsyncIterator[MakeApp]:
    """``make_app(bindings, listen=topic)`` -> (started App, Received); stopped at teardown."""
    apps: list[App] = []

    async def factory(bindings: dict[str, Any], listen: str | None = None, **config: Any) -> tuple[App, Received]:
        app = App(unique("app"), config={"broker": broker, "bindings": bindings, **config})
        received = Received()
        if listen is not None:

            @app.subscribe(listen)
            async def collect(event: Event) -> None:
                received.events.append(event)

        await app.start()
        apps.append(app)
        return app, received

    yield factory
    for app in reversed(apps):
        await app.stop(timeout=5)
