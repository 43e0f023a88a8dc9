"""The metrics plugin: counts per outcome with their attributes, settings, and the Prometheus endpoint.

A meter provider can be set only once per process, so one module fixture sets an SDK
``MeterProvider`` with an ``InMemoryMetricReader``; tests read only the points of their own unique
topics. The Prometheus endpoint is started once per process, so that test runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import opentelemetry.metrics
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

import mesh_plugins.metrics
from mesh import App, Event, hookimpl
from mesh.brokers.memory import MemoryBroker
from mesh.errors import ConfigError, PluginError
from mesh_plugins.metrics import APP_PLUGIN, EXTRA_HINT
from tests.support import BrokerSpec, free_port, unique, wait_for

pytestmark = [pytest.mark.memory, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def reader() -> InMemoryMetricReader:
    """The reader of the process-wide meter provider this module sets."""
    if mesh_plugins.metrics.provider_is_set():
        pytest.skip("a meter provider was already set in this process")
    reader = InMemoryMetricReader()
    opentelemetry.metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def points(reader: InMemoryMetricReader, topic: str) -> dict[str, Any]:
    """Value per metric name for one topic (a histogram gives its count); attributes are checked."""
    out: dict[str, Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    if attrs.get("topic") != topic:
                        continue
                    out["attributes"] = attrs
                    if isinstance(point, HistogramDataPoint):
                        out[metric.name] = point.count
                    else:
                        assert isinstance(point, NumberDataPoint)
                        out[metric.name] = point.value
    return out


def error_of(info: pytest.ExceptionInfo[BaseException]) -> ConfigError:
    """The ConfigError raised in ``mesh_configure`` (the plugin manager may wrap it in a PluginError)."""
    err = info.value if isinstance(info.value, ConfigError) else info.value.__cause__
    assert isinstance(err, ConfigError), repr(info.value)
    return err


async def test_counts_per_outcome(memory_spec: BrokerSpec, reader: InMemoryMetricReader) -> None:
    jobs = unique("jobs")
    cfg = {
        "broker": memory_spec.config(),
        "defaults": {"retry": {"attempts": 3, "immediate": 1, "initial": "1ms", "max": "5ms"}},
    }
    app = App(unique("svc"), config=cfg)
    assert APP_PLUGIN in app.plugins.names()

    @app.subscribe(jobs)
    async def work(event: Event) -> None:
        if event.data["fail"]:
            raise RuntimeError("boom")

    async with app:
        for fail in (False, True, False, False):
            await app.publish(jobs, {"fail": fail}, type="job")
        await app.join()
    MemoryBroker.reset(memory_spec.options["name"])

    got = points(reader, jobs)
    assert got == {
        "attributes": {"topic": jobs, "app": app.id, "broker": "memory"},
        "mesh.events.published": 4,
        "mesh.events.consumed": 3,
        # the failing event: call, immediate retry, delayed retry (redelivery), dead letter
        "mesh.events.failed": 2,
        "mesh.events.retried": 2,
        "mesh.events.dead_lettered": 1,
        "mesh.handler.duration": 6,  # every handler call: 3 + 3
    }
    assert points(reader, f"{jobs}.dlq")["mesh.events.published"] == 1


async def test_undecodable_messages_count_as_failed_and_dead_lettered(
    memory_spec: BrokerSpec, reader: InMemoryMetricReader
) -> None:
    from mesh.codecs import WireMessage

    raw = unique("raw")
    app = App(unique("svc"), config={"broker": memory_spec.config()})

    @app.subscribe(raw)
    async def work(event: Event) -> None: ...

    async with app:
        await app.broker.publish_raw(  # type: ignore[attr-defined]
            raw, WireMessage(b"{not json", {"ce_type": "t"}, None, "application/json")
        )
        await app.join()
    MemoryBroker.reset(memory_spec.options["name"])
    got = points(reader, raw)
    assert (got["mesh.events.failed"], got["mesh.events.dead_lettered"]) == (1, 1)
    assert "mesh.events.consumed" not in got


def test_inactive_without_a_meter_provider_or_port(
    memory_spec: BrokerSpec, reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = {"broker": memory_spec.config()}
    assert APP_PLUGIN in App("on", config=cfg).plugins.names()
    off = App("off", config={**cfg, "plugins": {"config": {"metrics": {"enabled": False}}}})
    assert APP_PLUGIN not in off.plugins.names()
    monkeypatch.setattr(opentelemetry.metrics, "get_meter_provider", NoOpMeterProvider)
    app = App("plain", config=cfg)
    assert APP_PLUGIN not in app.plugins.names()
    assert all(plugin != APP_PLUGIN for plugin, _ in app.plugins.implementations("mesh_delivery_outcome"))
    forced = App("forced", config={**cfg, "plugins": {"config": {"metrics": {"enabled": True}}}})
    assert APP_PLUGIN in forced.plugins.names()


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"colour": "red"}, "plugins.config.metrics.colour"),
        ({"port": 0}, "plugins.config.metrics.port"),
        ({"port": "http"}, "plugins.config.metrics.port"),
    ],
)
def test_bad_settings_name_their_path(memory_spec: BrokerSpec, settings: dict[str, Any], path: str) -> None:
    cfg = {"broker": memory_spec.config(), "plugins": {"config": {"metrics": settings}}}
    with pytest.raises((ConfigError, PluginError)) as info:
        App("svc", config=cfg)
    assert [p for p, _ in error_of(info).problems] == [path]


def test_bad_port_in_the_environment(memory_spec: BrokerSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_METRICS_PORT", "nine")
    with pytest.raises((ConfigError, PluginError)) as info:
        App("svc", config={"broker": memory_spec.config()})
    assert error_of(info).problems == [("MESH_METRICS_PORT", "not a port number: 'nine'")]


def test_prometheus_without_the_exporter_names_the_extra(
    memory_spec: BrokerSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh_plugins.metrics, "_prometheus", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)  # import fails
    cfg = {"broker": memory_spec.config(), "plugins": {"config": {"metrics": {"port": free_port()}}}}
    with pytest.raises((ConfigError, PluginError)) as info:
        App("svc", config=cfg)
    [(path, message)] = error_of(info).problems
    assert path == "plugins.config.metrics.port"
    assert EXTRA_HINT in message and "pip install 'event-mesh[otel]'" in message


PROMETHEUS = textwrap.dedent(
    """
    import asyncio, json, os, sys, urllib.request
    from mesh import App, Event
    from mesh.errors import ConfigError, PluginError

    port = int(os.environ["MESH_METRICS_PORT"])
    config = {
        "broker": {"type": "memory", "options": {"name": "prom"}},
        "defaults": {"retry": {"attempts": 2, "immediate": 1, "initial": "1ms"}},
    }

    async def main():
        app = App("promsvc", config=config)

        @app.subscribe("jobs")
        async def work(event: Event) -> None:
            if event.data["fail"]:
                raise RuntimeError("boom")

        async with app:
            for fail in (False, True, False):
                await app.publish("jobs", {"fail": fail}, type="job")
            await app.join()

    asyncio.run(main())
    App("second", config=config)  # the same port again: served once, shared
    os.environ["MESH_METRICS_PORT"] = str(port + 1 if port < 65535 else port - 1)
    try:
        App("third", config=config)
        other = "no error"
    except (ConfigError, PluginError) as exc:
        other = str(exc)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        root = 200
    except urllib.error.HTTPError as exc:
        root = exc.code
    print(json.dumps({"body": body, "other": other, "root": root}))
    """
)


def sample(body: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample whose labels include ``labels``."""
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(part.split("=", 1) for part in line[len(name) + 1 : line.rindex("}")].split(","))
        if all(got.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_prometheus_endpoint_serves_the_counts() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESH_"))}
    env["MESH_METRICS_PORT"] = str(port)
    proc = subprocess.run([sys.executable, "-c", PROMETHEUS], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["root"] == 404, "the metrics server answers /metrics only"
    body = out["body"]
    labels = {"app": "promsvc", "broker": "memory", "topic": "jobs"}
    assert sample(body, "mesh_events_published_total", **labels) == 3
    assert sample(body, "mesh_events_published_total", **{**labels, "topic": "jobs.dlq"}) == 1
    assert sample(body, "mesh_events_consumed_total", **labels) == 2
    assert sample(body, "mesh_events_failed_total", **labels) == 1
    assert sample(body, "mesh_events_retried_total", **labels) == 1
    assert sample(body, "mesh_events_dead_lettered_total", **labels) == 1
    assert sample(body, "mesh_handler_duration_seconds_count", **labels) == 4
    assert "already serves metrics on 127.0.0.1:" in out["other"]


async def test_counts_match_the_events_sent_on_every_broker(
    broker_spec: BrokerSpec, reader: InMemoryMetricReader
) -> None:
    from tests.support import wait_for

    jobs = unique("jobs")
    cfg = {
        "broker": {**broker_spec.config(), "namespace": unique("mx") + "."},
        "defaults": {"retry": {"attempts": 2, "immediate": 0, "initial": "100ms", "max": "200ms"}},
    }
    app = App(unique("svc"), config=cfg)

    @app.subscribe(jobs)
    async def work(event: Event) -> None:
        if event.data["fail"]:
            raise RuntimeError("boom")

    async with app:
        for fail in (False, True, False, False, False):
            await app.publish(jobs, {"fail": fail}, type="job")
        await wait_for(
            lambda: (
                points(reader, jobs).get("mesh.events.dead_lettered") == 1
                and points(reader, jobs).get("mesh.events.consumed") == 4
            ),
            timeout=90,
            what="four handled and one dead-lettered",
        )
    got = points(reader, jobs)
    assert got["attributes"] == {"topic": jobs, "app": app.id, "broker": broker_spec.type}
    # failed counts failed handlings: the first call (retried), the second (dead-lettered)
    assert (got["mesh.events.published"], got["mesh.events.failed"], got["mesh.events.retried"]) == (5, 2, 1)
    assert got["mesh.handler.duration"] == 6  # four successes, the failing event twice


async def test_a_parked_delivery_is_counted(
    memory_spec: BrokerSpec, reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesh.pipeline import settle

    monkeypatch.setattr(settle, "FALLBACK_REDELIVERY", 0.01)
    monkeypatch.setattr(settle, "PARK_DELAY", 3600.0)
    jobs = unique("jobs")
    app = App(unique("svc"), config={"broker": memory_spec.config(), "defaults": {"retry": {"attempts": 1}}})

    @app.subscribe(jobs)
    async def work(event: Event) -> None:
        raise RuntimeError("boom")

    real_publish = app.broker.publish

    async def dlq_down(topic: str, event: Event) -> None:
        if topic.endswith(".dlq"):
            raise ConnectionError("dlq unavailable")
        await real_publish(topic, event)

    outcomes: list[str] = []

    class Outcomes:
        @hookimpl
        def mesh_delivery_outcome(self, outcome: str) -> None:
            outcomes.append(outcome)

    app.plugins.register(Outcomes())
    async with app:
        app.runtime.publish = dlq_down
        await app.publish(jobs, {}, type="job")
        await wait_for(lambda: outcomes.count("parked") == 1, timeout=10, what="the delivery parked")
    MemoryBroker.reset(memory_spec.options["name"])
    got = points(reader, jobs)
    assert got.get("mesh.events.parked") == 1
    assert "mesh.events.dead_lettered" not in got
