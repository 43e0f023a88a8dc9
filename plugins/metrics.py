"""Built-in metrics plugin: OpenTelemetry counters of events and a histogram of handler time.

==============================  =========  ===================================================
``mesh.events.published``       counter    events the broker took from this App
``mesh.events.consumed``        counter    deliveries whose handler succeeded (then acked)
``mesh.events.failed``          counter    deliveries that failed (retried later, dead-lettered
                                           or given back; undecodable ones too)
``mesh.events.retried``         counter    retries: immediate ones in process and delayed ones
``mesh.events.dead_lettered``   counter    deliveries written to the dead-letter destination
``mesh.events.parked``          counter    deliveries parked: dead-lettering failed every attempt
``mesh.handler.duration``       histogram  seconds per handler call
``mesh.invoke.duration``        histogram  seconds per invocation this App made, by ``outcome``
``mesh.invoke.served``          counter    requests this App's methods got, by ``outcome``
                                           (``ok``, ``error``, ``permission_denied``, ``expired``...)
``mesh.invoke.replies_dropped`` counter    replies dropped by the caller, by ``reason``
                                           (``late_reply``, ``malformed_reply``)
==============================  =========  ===================================================

Every point has the attributes ``app`` (the app id) and ``broker`` (its type); event points add
``topic``, invocation points ``target`` (the called app, on the caller) and ``method``.

Instruments come from ``opentelemetry.metrics.get_meter("mesh")``. The plugin is active for an
App when, as the App is created, a meter provider is set, a Prometheus port is configured, or
``enabled: true``; otherwise it adds nothing to the hot path. Settings (``plugins.config.metrics``)::

    plugins:
      config:
        metrics: {port: 9464, host: 127.0.0.1, enabled: null}

``port`` (or ``MESH_METRICS_PORT``, which ``mesh run --metrics-port`` sets and which wins) serves
Prometheus text on ``http://host:port/metrics`` through a ``PrometheusMetricReader``, once per
process; that needs ``pip install 'event-mesh[otel]'``. See ``docs/plugins/metrics.md``.
"""

from __future__ import annotations

import os
import threading
from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh import __version__
from mesh.errors import ConfigError
from mesh.event import Event
from mesh.hooks import hookimpl
from mesh.invoke import Invocation, InvokeHandle, InvokeLayer
from mesh.pipeline.stepping import taskless
from mesh.types import Context, Handle, HandlerLayer, Publish, PublishLayer, SubscriptionInfo

if TYPE_CHECKING:
    from mesh.config import MeshConfig
    from mesh.runtime import Runtime

name = "metrics"

APP_PLUGIN = "metrics.app"
"""Name of the per-App part, registered only when the plugin is active for that App."""
PORT_ENV = "MESH_METRICS_PORT"
EXTRA_HINT = "pip install 'event-mesh[otel]'"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Bucket bounds of ``mesh.handler.duration`` (seconds), as the messaging conventions advise."""


class MetricsSettings(BaseModel):
    """``plugins.config.metrics``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: int | None = Field(None, ge=1, le=65535)
    """Serve Prometheus metrics on ``host:port`` (``MESH_METRICS_PORT`` overrides it)."""
    host: str = "127.0.0.1"
    """Address the Prometheus endpoint binds to."""
    enabled: bool | None = None
    """``None``: active when a meter provider is set or a port is configured; ``True``/``False``: always/never."""


class Instruments:
    """The plugin's instruments on one meter."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.published = meter.create_counter("mesh.events.published", "{event}", "Events published")
        self.consumed = meter.create_counter("mesh.events.consumed", "{event}", "Deliveries handled successfully")
        self.failed = meter.create_counter("mesh.events.failed", "{event}", "Deliveries that failed")
        self.retried = meter.create_counter("mesh.events.retried", "{event}", "Retries, immediate and delayed")
        self.dead_lettered = meter.create_counter(
            "mesh.events.dead_lettered", "{event}", "Deliveries written to the dead-letter destination"
        )
        self.parked = meter.create_counter(
            "mesh.events.parked", "{event}", "Deliveries parked after every dead-letter attempt failed"
        )
        self.duration = meter.create_histogram(
            "mesh.handler.duration",
            "s",
            "Duration of one handler call",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.invoke_duration = meter.create_histogram(
            "mesh.invoke.duration",
            "s",
            "Duration of one invocation, request to reply (every attempt)",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.invoke_served = meter.create_counter(
            "mesh.invoke.served", "{request}", "Invocation requests served, by outcome"
        )
        self.invoke_dropped = meter.create_counter(
            "mesh.invoke.replies_dropped", "{reply}", "Replies dropped by the caller, by reason"
        )


class _Prometheus:
    def __init__(self, host: str, port: int, instruments: Instruments) -> None:
        self.host = host
        self.port = port
        self.instruments = instruments


_lock = threading.Lock()
_global: Instruments | None = None
_prometheus: _Prometheus | None = None


def provider_is_set() -> bool:
    """Whether a real meter provider is set globally (not the API's proxy or no-op one)."""
    provider = metrics.get_meter_provider()
    return not isinstance(provider, metrics.NoOpMeterProvider) and type(provider).__name__ != "_ProxyMeterProvider"


def global_instruments() -> Instruments:
    """Instruments on the global meter ``mesh`` (made once per process)."""
    global _global
    with _lock:
        if _global is None:
            _global = Instruments(metrics.get_meter("mesh", __version__))
        return _global


def settings_of(config: MeshConfig) -> MetricsSettings:
    """Validate ``plugins.config.metrics``; every problem is reported with its path."""
    try:
        return MetricsSettings.model_validate(config.plugins.config.get(name, {}))
    except ValidationError as exc:
        problems = [
            (".".join(["plugins.config.metrics", *(str(p) for p in err["loc"])]), err["msg"]) for err in exc.errors()
        ]
        raise ConfigError(problems) from exc


def port_of(settings: MetricsSettings) -> tuple[int | None, str]:
    """The Prometheus port (``MESH_METRICS_PORT`` wins over the file) and where it came from."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return settings.port, "plugins.config.metrics.port"
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ConfigError([(PORT_ENV, f"not a port number: {raw!r}")])
    return port, PORT_ENV


def serve_prometheus(host: str, port: int, where: str) -> Instruments:
    """Expose metrics on ``http://host:port/metrics`` (once per process); the instruments to use."""
    global _prometheus
    with _lock:
        if _prometheus is not None:
            if (_prometheus.host, _prometheus.port) != (host, port):
                raise ConfigError(
                    [(where, f"this process already serves metrics on {_prometheus.host}:{_prometheus.port}")]
                )
            return _prometheus.instruments
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider
            from prometheus_client.exposition import MetricsHandler
        except ImportError as exc:
            raise ConfigError(
                [(where, f"Prometheus metrics need the OpenTelemetry SDK and exporter: {EXTRA_HINT} ({exc})")]
            ) from exc
        try:
            _serve_metrics_only(MetricsHandler, host, port)
        except OSError as exc:
            raise ConfigError([(where, f"cannot serve metrics on {host}:{port}: {exc}")]) from exc
        provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
        if not provider_is_set():
            metrics.set_meter_provider(provider)  # the app's own OpenTelemetry metrics are served too
        instruments = Instruments(provider.get_meter("mesh", __version__))
        _prometheus = _Prometheus(host, port, instruments)
        return instruments


def _serve_metrics_only(handler: Any, host: str, port: int) -> None:
    """prometheus_client's handler behind ``/metrics`` only (404 elsewhere), in a daemon thread."""
    import threading
    from http.server import ThreadingHTTPServer
    from urllib.parse import urlsplit

    class OnlyMetrics(handler):  # type: ignore[misc]
        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no line per scrape on stderr

    server = ThreadingHTTPServer((host, port), OnlyMetrics)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"mesh-metrics:{port}", daemon=True).start()


@hookimpl
def mesh_configure(runtime: Runtime, config: MeshConfig) -> None:
    settings = settings_of(config)
    port, where = port_of(settings)
    if settings.enabled is False:
        return
    if port is not None:
        instruments = serve_prometheus(settings.host, port, where)
    elif settings.enabled or provider_is_set():
        instruments = global_instruments()
    else:
        return  # nothing would record: add no layer and no outcome hook
    runtime.hooks.plugins.register(AppMetrics(runtime, instruments), name=APP_PLUGIN)


class AppMetrics:
    """The per-App part of the plugin: its layers and outcome hook, with attributes cached per topic."""

    def __init__(self, runtime: Runtime, instruments: Instruments) -> None:
        self.app_id = runtime.id
        self.broker = runtime.config.broker.type
        self.i = instruments
        self._attrs: dict[str, dict[str, str]] = {}

    def attributes(self, topic: str) -> dict[str, str]:
        """``{topic, app, broker}`` for a topic (one shared dict per topic: never mutate it)."""
        attrs = self._attrs.get(topic)
        if attrs is None:
            if len(self._attrs) > 10_000:
                self._attrs.clear()
            attrs = self._attrs[topic] = {"topic": topic, "app": self.app_id, "broker": self.broker}
        return attrs

    @hookimpl(trylast=True)
    def mesh_publish_layers(self, runtime: Runtime) -> PublishLayer:
        counter = self.i.published

        def layer(next_: Publish) -> Publish:
            async def publish(topic: str, event: Event) -> None:
                await next_(topic, event)
                counter.add(1, self.attributes(topic))

            return publish

        return layer

    @hookimpl(trylast=True)
    def mesh_handler_layers(self, runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer:
        histogram = self.i.duration
        attrs = self.attributes(subscription.topic)

        def layer(next_: Handle) -> Handle:
            async def handle(ctx: Context) -> Any:
                start = perf_counter()
                try:
                    return await next_(ctx)
                finally:
                    histogram.record(perf_counter() - start, attrs)

            return handle

        return taskless(layer)

    @hookimpl
    def mesh_delivery_outcome(self, context: Context, outcome: str, error: BaseException | None) -> None:
        if outcome == "skipped":
            return
        i = self.i
        attrs = self.attributes(context.topic)
        retries: int = context.state.get("immediate_retries", 0)
        if outcome == "handled":
            i.consumed.add(1, attrs)
        else:
            i.failed.add(1, attrs)
            if outcome == "retry":
                retries += 1
            elif outcome == "dead_letter":
                i.dead_lettered.add(1, attrs)
            elif outcome == "parked":
                i.parked.add(1, attrs)
        if retries:
            i.retried.add(retries, attrs)

    # -- invocation ----------------------------------------------------------------------------

    @hookimpl(trylast=True)
    def mesh_invoke_layers(self, runtime: Runtime) -> InvokeLayer:
        histogram = self.i.invoke_duration

        def layer(next_: InvokeHandle) -> InvokeHandle:
            async def invoke(call: Invocation) -> Any:
                start = perf_counter()
                try:
                    return await next_(call)
                finally:
                    attrs = {
                        "app": self.app_id,
                        "broker": self.broker,
                        "target": call.target,
                        "method": call.method,
                        "outcome": call.outcome or "failed",
                    }
                    histogram.record(perf_counter() - start, attrs)

            return invoke

        return layer

    @hookimpl
    def mesh_invocation_outcome(
        self, runtime: Runtime, side: str, method: str, peer: str, outcome: str, error: BaseException | None
    ) -> None:
        if side == "callee":
            attrs = {"app": self.app_id, "broker": self.broker, "method": method, "outcome": outcome}
            self.i.invoke_served.add(1, attrs)
        else:
            self.i.invoke_dropped.add(1, {"app": self.app_id, "broker": self.broker, "reason": outcome})
