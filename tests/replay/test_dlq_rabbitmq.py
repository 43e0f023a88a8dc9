"""Dead letters on RabbitMQ without the archive: the dead-letter topic is logged in a stream queue,
so ``DeadLetters`` and ``mesh dlq`` list, show, redrive and purge them out of the box."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mesh import App, Event
from mesh.cli import cli
from mesh.event import now
from mesh.extensions import RESERVED_PREFIX
from mesh.replay import DeadLetters, ReplaySpec, open_tools
from tests.replay.support import Consumer, mesh_config, wait_count
from tests.support import DEFAULT_URLS, BrokerSpec, reachable, unavailable, unique

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]

URL = os.environ.get("MESH_TEST_RABBITMQ_URL", DEFAULT_URLS["rabbitmq"])
ERRORS = {0: TimeoutError, 1: TimeoutError, 2: ValueError}


class World:
    """A shop on RabbitMQ and a payments app whose handler fails: 3 events end on ``<topic>.dlq``."""

    def __init__(self, tmp_path: Path) -> None:
        self.topic = unique("pay")
        self.dlq = f"{self.topic}.dlq"
        self.config = mesh_config(BrokerSpec("rabbitmq", URL), None)
        self.state_dir = str(tmp_path / "state")
        self.file = tmp_path / "mesh.yaml"
        self.file.write_text(yaml.safe_dump(self.config))
        self.payments_id = unique("payments")
        self.watcher_id = unique("watcher")
        self.broken = True
        self.sent: list[Event] = []

    def payments(self) -> Consumer:
        return Consumer(
            self.payments_id,
            self.topic,
            self.config,
            fail=lambda e: ERRORS[e.data["i"]] if self.broken else None,
        )

    async def seed(self) -> None:
        shop, payments = App(unique("shop"), config=self.config), self.payments()
        watcher = Consumer(self.watcher_id, self.dlq, self.config)  # an ordinary consumer of the dlq topic
        async with shop, payments.app, watcher.app:
            self.sent = [await shop.publish(self.topic, {"i": i}, type="pay.requested") for i in range(3)]
            await wait_count(watcher, 3, what="3 dead letters")

    def tools(self) -> Any:
        return open_tools(App(unique("ops"), config=self.config), state_dir=self.state_dir)

    async def cleanup(self) -> None:
        import aio_pika

        connection = await aio_pika.connect(URL)
        async with connection:
            queues = (f"{self.topic}.{self.payments_id}", f"{self.dlq}.{self.watcher_id}")
            for name in (*queues, f"{RESERVED_PREFIX}stream.{self.dlq}"):
                with contextlib.suppress(Exception):
                    await (await connection.channel()).queue_delete(name)
            for name in (self.topic, self.dlq):
                with contextlib.suppress(Exception):
                    await (await connection.channel()).exchange_delete(name)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Seeded in a loop of its own, so the CLI (which runs its own loop) can use it too."""
    if not reachable(URL, 5672):
        unavailable(f"rabbitmq at {URL}")
    w = World(tmp_path)
    try:
        asyncio.run(w.seed())
        yield w
    finally:
        asyncio.run(w.cleanup())


async def test_list_and_show_without_the_archive(world: World) -> None:
    async with world.tools() as tools:
        dlq: DeadLetters = tools.dead_letters(world.dlq)
        summary = await dlq.summary()
        assert summary.source == "the rabbitmq broker's history"
        assert summary.total == 3
        assert {e: s.count for e, s in summary.by_error.items()} == {"TimeoutError": 2, "ValueError": 1}
        assert summary.by_origin == {world.topic: 3}
        [entry] = await dlq.show(world.sent[2].id)
        assert entry.state == "pending" and entry.event.data == {"i": 2}
        assert entry.event.extensions["mesherrortype"] == "ValueError"
        assert entry.event.extensions["meshtopic"] == world.topic
        assert entry.ref.startswith("position offset=")


async def test_redrive_with_a_fixed_handler_handles_them(world: World) -> None:
    world.broken = False
    payments = world.payments()
    async with payments.app, world.tools() as tools:
        dlq = tools.dead_letters(world.dlq)
        result = await dlq.redrive(canary=1, canary_wait=1.0)
        assert result.sent == 3 and result.by_destination == {world.topic: 3}
        await wait_count(payments, 3, what="3 redriven events handled")
        assert sorted(e.id for e in payments.events) == sorted(e.id for e in world.sent)
        assert all(str(e.extensions["meshredrive"]) == "1" for e in payments.events)
        after = await dlq.summary()
        assert after.total == 0 and after.done == 3


async def test_purge_marks_them(world: World) -> None:
    async with world.tools() as tools:
        dlq = tools.dead_letters(world.dlq)
        assert await dlq.purge(older_than=now(), dry_run=True) == 3
        assert await dlq.purge(older_than=now()) == 3
        after = await dlq.summary()
        assert after.total == 0 and after.done == 3
        [entry] = await dlq.show(world.sent[0].id)
        assert entry.state.startswith("purged at ")


async def test_replay_from_the_broker_reads_the_dlq_stream(world: World) -> None:
    async with world.tools() as tools:
        spec = ReplaySpec(world.dlq, name=unique("r"), source="broker")
        result = await tools.replayer.dry_run(spec)
        assert result.matched == 3 and result.by_type == {"pay.requested": 3}


def test_cli_lists_them(world: World) -> None:
    result = CliRunner().invoke(cli, ["dlq", "list", "-c", str(world.file), world.dlq, "--state-dir", world.state_dir])
    assert result.exit_code == 0, result.output
    assert f"{world.dlq} (the rabbitmq broker's history): 3 pending dead letters" in result.output
    assert "TimeoutError" in result.output and "ValueError" in result.output
