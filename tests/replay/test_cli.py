"""``mesh replay`` and ``mesh dlq`` on the memory broker with a SQLite archive, bad input included; dlq on Redis."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from mesh import App, Event
from mesh.archive import ArchiveQuery, open_archive
from mesh.brokers.memory import MemoryBroker
from mesh.cli import cli
from mesh.codecs.data import format_time
from mesh.event import now
from tests.replay.support import Consumer, flush, mesh_config, sqlite_url, wait_count
from tests.support import DEFAULT_URLS, BrokerSpec, reachable, unavailable, unique

pytestmark = [pytest.mark.timeout(60)]


class Shop:
    """A seeded world: 20 orders (billing and shipping got them), 5 failed payments in pay.dlq."""

    def __init__(self, tmp_path: Path) -> None:
        self.spec = BrokerSpec("memory", None, {"name": unique("cli")})
        self.archive = sqlite_url(tmp_path)
        self.config = mesh_config(self.spec, self.archive)
        self.file = tmp_path / "mesh.yaml"
        self.file.write_text(yaml.safe_dump(self.config))
        self.t0 = now().replace(microsecond=0) - timedelta(minutes=1)
        self.orders: list[Event] = []
        self.failed: list[Event] = []
        asyncio.run(self._seed())

    async def _seed(self) -> None:
        shop = App("shop", config=self.config)
        billing, shipping = Consumer("billing", "orders", self.config), Consumer("shipping", "orders", self.config)
        payments = Consumer(
            "payments", "pay", self.config, fail=lambda e: TimeoutError if e.data["i"] < 3 else ValueError
        )
        async with shop, billing.app, shipping.app, payments.app:
            for i in range(20):
                kind = "shop.order.created" if i % 4 else "shop.order.paid"
                self.orders.append(
                    await shop.publish("orders", {"i": i}, type=kind, time=self.t0 + timedelta(seconds=i))
                )
            for i in range(5):
                self.failed.append(await shop.publish("pay", {"i": i}, type="pay.requested"))
            for consumer in (billing, shipping, payments):
                await consumer.app.join()
            await flush(shop, billing.app, shipping.app, payments.app)

    def at(self, seconds: float) -> str:
        return format_time(self.t0 + timedelta(seconds=seconds))

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(
            cli,
            [*args[:2], "-c", str(self.file), *args[2:]]
            if args[0] == "dlq"
            else [args[0], "-c", str(self.file), *args[1:]],
            input=input,
        )

    def collect(self, app_id: str, topic: str, n: int) -> list[Event]:
        """Start the app's consumer again and take what its group has waiting."""

        async def take() -> list[Event]:
            consumer = Consumer(app_id, topic, self.config)
            async with consumer.app:
                await consumer.app.join()
            return consumer.events

        return asyncio.run(take())


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    world = Shop(tmp_path)
    yield world
    MemoryBroker.reset(world.spec.options["name"])


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def fails(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output


# -- mesh replay ---------------------------------------------------------------------------------


@pytest.mark.memory
def test_dry_run_prints_counts_by_type(shop: Shop) -> None:
    out = ok(
        shop.run(
            "replay",
            "--topic",
            "orders",
            "--since",
            shop.at(4),
            "--until",
            shop.at(12),
            "--to-group",
            "billing",
            "--dry-run",
        )
    )
    assert "dry run: 8 events on orders" in out and "group billing of orders only" in out
    assert "shop.order.created         6" in out and "shop.order.paid            2" in out
    assert shop.collect("billing", "orders", 0) == []


@pytest.mark.memory
def test_replay_to_one_group_then_resume_says_finished_and_list_shows_it(shop: Shop) -> None:
    out = ok(
        shop.run(
            "replay",
            "--topic",
            "orders",
            "--since",
            shop.at(0),
            "--until",
            shop.at(10),
            "--type",
            "shop.order.created",
            "--to-group",
            "billing",
            "--rate",
            "1000/s",
            "--batch",
            "3",
            "--name",
            "rebill",
        )
    )
    assert "replay rebill finished: 7 events sent now, 7 in all (3 batches)" in out
    got = shop.collect("billing", "orders", 7)
    assert [e.id for e in got] == [e.id for e in shop.orders[:10] if e.type == "shop.order.created"]
    assert {e.extensions["meshreplay"] for e in got} == {"rebill"}
    assert shop.collect("shipping", "orders", 0) == [], "nobody else"
    assert "had already finished (7 events sent)" in ok(shop.run("replay", "--resume", "rebill"))
    assert "rebill  finished  7 sent  topic orders" in ok(shop.run("replay", "--list"))
    fails(shop.run("replay", "--topic", "orders", "--since", shop.at(0), "--name", "rebill"), 1, "--resume rebill")


@pytest.mark.memory
def test_replay_bad_input(shop: Shop) -> None:
    base = ("replay", "--topic", "orders")
    fails(shop.run(*base, "--since", shop.at(10), "--until", shop.at(5)), 2, "empty window")
    fails(shop.run(*base), 2, "give --since")
    fails(shop.run(*base, "--since", "yesterday-ish"), 2, "not a time: 'yesterday-ish'")
    fails(shop.run(*base, "--since", "1h", "--rate", "fast"), 2, "not a rate: 'fast'")
    fails(shop.run(*base, "--since", "1h", "--where", "tenant"), 2, "--where takes name=value")
    fails(shop.run(*base, "--since", "1h", "--to-group", "a", "--to-topic", "b"), 2, "exclude each other")
    fails(shop.run(*base, "--since", "1h", "--to-topic", "_mesh.x"), 2, "reserved prefix")
    fails(shop.run("replay", "--topic", "nope", "--since", "1h"), 1, "unknown topic 'nope'")
    fails(shop.run(*base, "--since", "1h", "--to-group", "nobody"), 1, "no group 'nobody' subscribes to 'orders'")
    fails(shop.run(*base, "--since", "1h", "--where", "tenant=acme"), 1, "has the attribute 'tenant'")
    fails(shop.run(*base, "--since", "3h", "--until", "2h"), 1, "nothing to replay: no events on 'orders'")
    fails(shop.run("replay", "--resume", "ghost"), 1, "no replay named 'ghost'")
    fails(shop.run("replay", "--resume", "ghost", "--topic", "x"), 2, "--resume takes the replay's saved settings")
    assert shop.collect("billing", "orders", 0) == [], "nothing was sent by any of them"


@pytest.mark.memory
def test_dry_run_refuses_an_unknown_group_as_the_real_run_does(shop: Shop) -> None:
    base = ("replay", "--topic", "orders", "--since", "1h", "--to-group", "nobody")
    real, dry = shop.run(*base), shop.run(*base, "--dry-run")
    fails(dry, 1, "no group 'nobody' subscribes to 'orders'")
    assert (dry.exit_code, dry.output) == (real.exit_code, real.output)
    real = shop.run("replay", "--topic", "nope", "--since", "1h", "--to-group", "nobody")
    dry = shop.run("replay", "--topic", "nope", "--since", "1h", "--to-group", "nobody", "--dry-run")
    fails(dry, 1, "unknown topic 'nope'")
    assert dry.output == real.output, "the topic is checked first in both"
    assert shop.collect("billing", "orders", 0) == []


@pytest.mark.memory
def test_a_corrupt_archive_row_is_a_warning(shop: Shop) -> None:
    async def corrupt() -> None:
        store = open_archive(shop.archive)
        await store.open()
        rows = await store.read(ArchiveQuery("orders"))
        await store.execute("UPDATE mesh_archive SET event = ? WHERE seq = ?", b"[1, 2", rows[2].seq)
        await store.close()

    asyncio.run(corrupt())
    result = shop.run("replay", "--topic", "orders", "--since", shop.at(0), "--to-topic", "orders.copy")
    out = ok(result)
    assert "warning: 1 unreadable records skipped" in out and "invalid JSON" in out
    assert "19 events sent now" in out


# -- mesh dlq --------------------------------------------------------------------------------


@pytest.mark.memory
def test_dlq_list_and_show(shop: Shop) -> None:
    out = ok(shop.run("dlq", "list", "pay.dlq"))
    assert "pay.dlq (archive): 5 pending dead letters" in out
    assert "TimeoutError        3" in out and "ValueError          2" in out and "from: pay (5)" in out
    assert "TimeoutError" not in ok(shop.run("dlq", "list", "pay.dlq", "--where", "error=ValueError"))
    doc = orjson.loads(ok(shop.run("dlq", "show", "pay.dlq", "--id", shop.failed[4].id, "--output", "json")))
    [entry] = doc["dead_letters"]
    assert entry["state"] == "pending" and entry["event"]["mesherrortype"] == "ValueError"
    assert entry["event"]["data"] == {"i": 4} and doc["topic"] == "pay.dlq"
    out = ok(shop.run("dlq", "show", "pay.dlq", "--id", shop.failed[4].id))
    assert f"dead letter {shop.failed[4].id}" in out and "error type       ValueError" in out
    assert 'data:\n{\n  "i": 4\n}' in out
    fails(shop.run("dlq", "show", "pay.dlq", "--id", "nope"), 1, "no dead letter with id 'nope'")
    fails(shop.run("dlq", "list", "orders.dlq"), 1, "unknown dead-letter topic 'orders.dlq'")
    out = ok(shop.run("dlq", "list", "pay.dlq", "--from", "broker"))
    assert "pay.dlq (the memory broker's history): 5 pending" in out


@pytest.mark.memory
def test_dlq_list_ids_prints_each_pending_dead_letter_newest_first(shop: Shop) -> None:
    newest_first = [e.id for e in reversed(shop.failed)]
    out = ok(shop.run("dlq", "list", "pay.dlq", "--ids"))
    assert "5 pending dead letters" in out
    header, *rows = out[out.index("id ") :].splitlines()
    assert header.split() == ["id", "dead-lettered", "(UTC)", "error", "topic", "[group]", "attempts", "reason"]
    assert [r.split()[0] for r in rows] == newest_first, "whole ids, one line each, newest first"
    assert rows[0].split()[3:7] == ["ValueError", "pay", "[payments]", "1"]
    assert all(line == line.rstrip() for line in out.splitlines()), "no padding at line ends"
    out = ok(shop.run("dlq", "list", "pay.dlq", "--ids", "--limit", "2", "--where", "error=TimeoutError"))
    assert [r.split()[0] for r in out[out.index("id ") :].splitlines()[1:3]] == newest_first[2:4]
    assert "... 1 older not shown (--limit 3 shows all)" in out
    doc = orjson.loads(ok(shop.run("dlq", "list", "pay.dlq", "--ids", "--output", "json", "--limit", "4")))
    assert doc["pending"] == 5 and doc["done"] == 0 and doc["by_origin"] == {"pay": 5}
    assert {k: v["count"] for k, v in doc["by_error"].items()} == {"TimeoutError": 3, "ValueError": 2}
    assert [r["id"] for r in doc["dead_letters"]] == newest_first[:4]
    first = doc["dead_letters"][0]
    assert (first["error"], first["topic"], first["group"], first["attempts"], first["redrive"]) == (
        "ValueError",
        "pay",
        "payments",
        1,
        None,
    )
    assert "failing" in first["reason"] and first["deadlettered"].endswith("Z")
    assert "dead_letters" not in orjson.loads(ok(shop.run("dlq", "list", "pay.dlq", "-o", "json")))


@pytest.mark.memory
def test_dlq_show_without_an_id_pages_through_the_newest(shop: Shop) -> None:
    out = ok(shop.run("dlq", "show", "pay.dlq"))
    assert out.startswith("dead letter 1 of 5 (newest first)\n")
    assert f"id               {shop.failed[4].id}" in out and "next: mesh dlq show pay.dlq --skip 1" in out
    out = ok(shop.run("dlq", "show", "pay.dlq", "--skip", "3", "--limit", "5"))
    assert "dead letter 4 of 5" in out and "dead letter 5 of 5" in out and "next:" not in out
    assert out.index(shop.failed[1].id) < out.index(shop.failed[0].id)
    doc = orjson.loads(ok(shop.run("dlq", "show", "pay.dlq", "--skip", "1", "--limit", "2", "-o", "json")))
    assert (doc["pending"], doc["skip"]) == (5, 1)
    assert [d["event"]["id"] for d in doc["dead_letters"]] == [shop.failed[3].id, shop.failed[2].id]
    doc = orjson.loads(ok(shop.run("dlq", "show", "pay.dlq", "--where", "error=TimeoutError", "-o", "json")))
    assert [d["event"]["id"] for d in doc["dead_letters"]] == [shop.failed[2].id] and doc["pending"] == 3
    assert "no pending dead letters after skipping 9 (5 pending)" in ok(
        shop.run("dlq", "show", "pay.dlq", "--skip", "9")
    )
    fails(shop.run("dlq", "show", "pay.dlq", "--output", "yaml"), 2, "'yaml' is not one of 'text', 'json'")


@pytest.mark.memory
def test_dlq_redrive_then_list_shows_what_is_left(shop: Shop) -> None:
    out = ok(
        shop.run(
            "dlq",
            "redrive",
            "pay.dlq",
            "--where",
            "error=TimeoutError",
            "--canary",
            "1",
            "--canary-wait",
            "100ms",
            "--rate",
            "100/s",
            "--name",
            "fix-1",
        )
    )
    assert "redrive fix-1: 3 dead letters sent to pay (3), canary of 1 passed" in out
    got = shop.collect("payments", "pay", 3)
    assert sorted(e.id for e in got) == sorted(e.id for e in shop.failed[:3])
    assert all(e.extensions["meshredrive"] == 1 and "mesherrortype" not in e.extensions for e in got)
    out = ok(shop.run("dlq", "list", "pay.dlq"))
    assert "2 pending dead letters (3 already redriven or purged)" in out
    fails(shop.run("dlq", "redrive", "pay.dlq", "--where", "error=TimeoutError"), 1, "3 already redriven")
    fails(shop.run("dlq", "redrive", "pay.dlq", "--canary-wait", "soon"), 2, "--canary-wait")
    out = ok(shop.run("dlq", "redrive", "pay.dlq", "--dry-run"))
    assert "dry run: 2 dead letters on pay.dlq would be redriven to pay (2)" in out
    listed = orjson.loads(ok(shop.run("dlq", "list", "pay.dlq", "--ids", "-o", "json")))["dead_letters"]
    assert [r["id"] for r in listed] == [shop.failed[4].id, shop.failed[3].id], "redriven ones are not pending"
    doc = orjson.loads(ok(shop.run("dlq", "show", "pay.dlq", "--id", shop.failed[0].id, "-o", "json")))
    assert doc["dead_letters"][0]["state"].startswith("redriven by fix-1 at ")


@pytest.mark.memory
def test_dlq_purge_asks_first(shop: Shop) -> None:
    fails(shop.run("dlq", "purge", "pay.dlq", "--older-than", "0s", input="n\n"), 1, "Aborted")
    assert "5 pending" in ok(shop.run("dlq", "list", "pay.dlq")), "declined: nothing removed"
    assert "nothing purged" in ok(shop.run("dlq", "purge", "pay.dlq", "--older-than", "7d"))
    assert "dry run: 5 dead letters" in ok(shop.run("dlq", "purge", "pay.dlq", "--older-than", "0s", "--dry-run"))
    out = ok(shop.run("dlq", "purge", "pay.dlq", "--older-than", "0s", "--where", "error=ValueError", input="y\n"))
    assert "Delete 2 dead letters from pay.dlq" in out and "purged 2 dead letters" in out
    assert "purged 3" in ok(shop.run("dlq", "purge", "pay.dlq", "--older-than", "0s", "--yes"))
    assert "no pending dead letters" in ok(shop.run("dlq", "list", "pay.dlq"))


@pytest.mark.memory
def test_without_an_archive_state_goes_to_files(shop: Shop, tmp_path: Path) -> None:
    config: dict[str, Any] = dict(shop.config)
    config["plugins"] = {"config": {}}
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(config))
    state = tmp_path / "state"
    args = ["replay", "-c", str(plain), "--state-dir", str(state), "--topic", "orders", "--since", shop.at(0)]
    out = ok(CliRunner().invoke(cli, [*args, "--to-group", "shipping", "--name", "from-log"]))
    assert "20 events sent now" in out
    assert (state / "replay.json").exists()
    fails(CliRunner().invoke(cli, [*args, "--from", "archive"]), 1, "no archive is configured")


@pytest.mark.memory
def test_the_progress_bar_can_be_forced(shop: Shop) -> None:
    out = ok(shop.run("replay", "--topic", "orders", "--since", shop.at(0), "--to-topic", "orders.copy", "--progress"))
    assert "20 events sent now" in out and "sent 20" in out


# -- on a real broker: Redis Streams, read from the broker's log and from the archive ------------------


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_dlq_list_ids_show_and_json_on_redis(tmp_path: Path) -> None:
    url = os.environ.get("MESH_TEST_REDIS_URL", DEFAULT_URLS["redis"])
    if not reachable(url, 6379):
        unavailable(f"redis at {url}")
    config = mesh_config(BrokerSpec("redis", url), sqlite_url(tmp_path))
    file = tmp_path / "mesh.yaml"
    file.write_text(yaml.safe_dump(config))
    topic = unique("pay")
    dlq = f"{topic}.dlq"

    async def seed() -> list[Event]:
        shop = App("shop", config=config)
        payments = Consumer("payments", topic, config, fail=lambda e: TimeoutError if e.data["i"] < 2 else ValueError)
        watcher = Consumer("watcher", dlq, config)
        async with shop, payments.app, watcher.app:
            sent = [await shop.publish(topic, {"i": i}, type="pay.requested") for i in range(3)]
            await wait_count(watcher, 3, what="3 dead letters on the Redis stream")
        return sent  # the apps' archive recorders flushed when they stopped

    sent = asyncio.run(seed())
    ids = {e.id for e in sent}

    def run(*args: str) -> str:
        return ok(CliRunner().invoke(cli, ["dlq", args[0], dlq, "-c", str(file), *args[1:]]))

    for origin in ("broker", "archive"):
        out = run("list", "--ids", "--from", origin)
        assert "3 pending dead letters" in out, out
        rows = out[out.index("id ") :].splitlines()[1:]
        assert {r.split()[0] for r in rows} == ids
        assert all(f"{topic} [payments]" in r for r in rows)
        doc = orjson.loads(run("list", "--ids", "--from", origin, "--output", "json"))
        assert doc["pending"] == 3 and doc["by_origin"] == {topic: 3}
        assert {k: v["count"] for k, v in doc["by_error"].items()} == {"TimeoutError": 2, "ValueError": 1}
        listed = doc["dead_letters"]
        assert {r["id"] for r in listed} == ids
        times = [r["deadlettered"] for r in listed]
        assert times == sorted(times, reverse=True), "newest first"
        newest = orjson.loads(run("show", "--from", origin, "-o", "json"))
        assert newest["pending"] == 3 and [d["event"]["id"] for d in newest["dead_letters"]] == [listed[0]["id"]]
        text = run("show", "--from", origin, "--skip", "2")
        assert "dead letter 3 of 3 (newest first)" in text and f"id               {listed[2]['id']}" in text
        one = orjson.loads(run("show", "--id", sent[0].id, "--from", origin, "-o", "json"))["dead_letters"]
        assert len(one) == 1 and one[0]["event"]["data"] == {"i": 0} and one[0]["state"] == "pending"
        assert one[0]["event"]["mesherrortype"] == "TimeoutError" and one[0]["event"]["meshtopic"] == topic
