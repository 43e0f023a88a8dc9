"""At-least-once across a SIGKILL: a consumer killed mid-stream loses nothing once restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.brokers import broker_class
from mesh.event import Event
from tests.support import BrokerSpec, unique

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

TOTAL = 2000
ROOT = Path(__file__).resolve().parents[2]


def start_consumer(spec: BrokerSpec, topic: str, group: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.brokers.crash_consumer", spec.type, spec.url or "-", topic, group, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def handled(out: Path) -> list[str]:
    return [line for line in out.read_text().splitlines() if line != "ready"] if out.exists() else []


async def wait_lines(out: Path, predicate, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate(out.read_text().splitlines() if out.exists() else []):
        if proc.poll() is not None:
            raise AssertionError(f"consumer exited with {proc.returncode} while waiting for {what}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigkilled_consumer_loses_nothing(make_broker, broker_spec: BrokerSpec, tmp_path: Path) -> None:
    if not broker_class(broker_spec.type).features.persistent:
        pytest.skip(f"{broker_spec.type} keeps nothing for a consumer that is gone")
    broker = await make_broker()
    topic, group, out = unique("crash"), unique("g"), tmp_path / "handled.txt"
    await broker.ensure_topic(topic)
    first = start_consumer(broker_spec, topic, group, out)
    try:
        await wait_lines(out, lambda lines: "ready" in lines, first, 60, "the consumer to subscribe")
        await asyncio.gather(
            *(broker.publish(topic, Event(type="crash", source="/t", data={"i": i})) for i in range(TOTAL))
        )
        await wait_lines(out, lambda lines: len(lines) > 300, first, 60, "some events handled")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = len(handled(out))
    assert killed_at < TOTAL, "the kill came too late to test anything"
    second = start_consumer(broker_spec, topic, group, out)
    try:
        await wait_lines(
            out,
            lambda lines: {line for line in lines if line != "ready"} >= {str(i) for i in range(TOTAL)},
            second,
            150,
            "every event handled after the restart",
        )
    finally:
        second.terminate()
        second.wait(10)
    assert {int(x) for x in handled(out)} == set(range(TOTAL))
