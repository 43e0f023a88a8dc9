"""Helpers for the replay tests: configs with an archive, consumer apps that record what they got."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh import App, Event
from mesh_plugins.archive import recorder_of
from tests.support import BrokerSpec, wait_for


def mesh_config(spec: BrokerSpec, archive: str | None, **extra: Any) -> dict[str, Any]:
    """A config for ``spec``'s broker with the archive at ``archive`` (a sqlite URL), quick retries."""
    config: dict[str, Any] = {
        "broker": spec.config(),
        "defaults": {"retry": {"attempts": 1, "immediate": 0}},
        "plugins": {"config": {}},
    }
    if archive is not None:
        config["plugins"]["config"]["archive"] = {"url": archive, "flush_interval": "50ms"}
    for key, value in extra.items():
        config[key] = value
    return config


def sqlite_url(tmp_path: Path, name: str = "archive.db") -> str:
    return f"sqlite:///{tmp_path / name}"


class Consumer:
    """An app subscribed to one topic as one group, recording every event handed to it."""

    def __init__(
        self,
        app_id: str,
        topic: str,
        config: dict[str, Any],
        *,
        fail: Callable[[Event], type[Exception] | None] | None = None,
        group: str | None = None,
    ) -> None:
        self.app = App(app_id, config=config)
        self.events: list[Event] = []
        self.fail = fail

        @self.app.subscribe(topic, group=group)
        async def handle(event: Event) -> None:
            self.events.append(event)
            error = self.fail(event) if self.fail is not None else None
            if error is not None:
                raise error(f"failing {event.id} on purpose")

    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def replayed(self) -> list[Event]:
        return [e for e in self.events if "meshreplay" in e.extensions]


async def flush(*apps: App) -> None:
    """Wait until each app's archive recorder has written what it buffered."""
    for app in apps:
        recorder = recorder_of(app)
        if recorder is not None:
            await recorder.flush()


async def settle(seconds: float = 0.5) -> None:
    """Give brokers time to deliver anything that should not arrive (checked after)."""
    await asyncio.sleep(seconds)


async def wait_count(consumer: Consumer, n: int, timeout: float = 30.0, what: str = "") -> None:
    await wait_for(lambda: len(consumer.events) >= n, timeout, what or f"{n} events for {consumer.app.id}")


# re-exported for the tests
__all__ = ["Consumer", "flush", "mesh_config", "settle", "sqlite_url", "wait_count", "wait_for"]
