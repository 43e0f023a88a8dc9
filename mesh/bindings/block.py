"""The bindings block of one app: builds the configured bindings, starts and stops them.

=====================  ==========================================================================
step                   what happens
=====================  ==========================================================================
``BindingsBlock(rt)``  each ``bindings.<name>`` is built from its registry entry (no I/O; a
                       missing client library raises :class:`~mesh.errors.ComponentNotInstalled`)
``start()``            output bindings connect; each ``from_topic`` gets a subscription through
                       the ordinary pipeline (retries, dead letters, tracing); the shared HTTP
                       servers listen; input bindings start. A failure stops what started.
``stop()``             input bindings stop, HTTP servers close, ``from_topic`` subscriptions
                       drain; output bindings stay usable until the app's stop callbacks run
                       (handlers draining may still call them), then close
``binding(name)``      the output binding, to ``await ...invoke(operation, data, metadata)``
=====================  ==========================================================================
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mesh.bindings.base import Binding, InputBinding, OutputBinding
from mesh.errors import ConfigError, MeshError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.base import Subscription
    from mesh.http import HttpServer
    from mesh.runtime import Runtime

__all__ = ["BindingsBlock"]

log = logging.getLogger("mesh.bindings")


class BindingsBlock:
    """The input and output bindings of one app instance (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.bindings: dict[str, Binding[Any]] = {}
        """Every configured binding by name."""
        self.servers: dict[tuple[str, int], HttpServer] = {}
        """The shared HTTP servers of the webhook bindings, by (host, port)."""
        self._subscriptions: list[Subscription] = []
        self._started: list[InputBinding[Any]] = []
        self._outputs_open = False
        registry = runtime.registry
        for name, component in runtime.config.bindings.items():
            cls = registry.load("binding", component.type)
            model = registry.options_model("binding", component.type, path=f"bindings.{name}.type")
            options: Any = component.options
            if model is not None:
                try:
                    options = model.model_validate(component.options)
                except ValueError as exc:  # the config was validated already; a hand-made one may not be
                    raise ConfigError([(f"bindings.{name}", str(exc))]) from None
            self.bindings[name] = cls(name, options, runtime)

    @property
    def inputs(self) -> list[InputBinding[Any]]:
        """The input bindings."""
        return [b for b in self.bindings.values() if isinstance(b, InputBinding)]

    @property
    def outputs(self) -> list[OutputBinding[Any]]:
        """The output bindings."""
        return [b for b in self.bindings.values() if isinstance(b, OutputBinding)]

    def binding(self, name: str) -> OutputBinding[Any]:
        """The output binding ``name`` (its :meth:`~OutputBinding.invoke` runs operations)."""
        found = self.bindings.get(name)
        if found is None:
            known = ", ".join(b.name for b in self.outputs) or "none configured"
            raise MeshError(f"no output binding {name!r} (output bindings: {known})")
        if not isinstance(found, OutputBinding):
            raise MeshError(f"binding {name!r} is an input binding ({found.type}): it has no operations")
        return found

    async def start(self) -> None:
        """Connect outputs, subscribe ``from_topic`` ones, then start the inputs (see the module docstring)."""
        try:
            for output in self.outputs:
                await output.start()
                output.state = "running"
            self._outputs_open = True
            self.runtime.on_stop(self.close_outputs)
            for output in self.outputs:
                if output.from_topic:
                    await self._subscribe(output)
            for binding in self.inputs:
                endpoint = binding.http_endpoint()
                if endpoint is not None:
                    binding.add_routes(self._server(endpoint))
            for server in self.servers.values():
                await server.start()
            for binding in self.inputs:
                await binding.start()
                binding.state = "running" if binding.state == "stopped" else binding.state
                self._started.append(binding)
        except BaseException:
            await self.stop()
            await self.close_outputs()
            raise

    def _server(self, endpoint: tuple[str, int]) -> HttpServer:
        server = self.servers.get(endpoint)
        if server is None:
            from mesh.http import HttpServer

            server = self.servers[endpoint] = HttpServer(*endpoint)
        return server

    async def _subscribe(self, output: OutputBinding[Any]) -> None:
        from mesh.pipeline import HandlerSpec, Route

        topic = output.from_topic
        assert topic is not None
        group = getattr(output.options, "group", None) or f"{self.runtime.id}.binding.{output.name}"

        async def drive(event: Event) -> None:
            await output.handle_event(event)

        drive.__qualname__ = f"binding.{output.name}"
        route = Route(self.runtime, topic, group)
        route.add(HandlerSpec(drive, topic, group, {}, None))
        route.build()
        sub = await self.runtime.broker.subscribe(topic, group, route, concurrency=route.concurrency)
        self._subscriptions.append(sub)

    async def stop(self) -> None:
        """Stop the inputs and HTTP servers, drain the ``from_topic`` subscriptions (outputs stay open)."""
        started, self._started = self._started, []
        for binding in reversed(started):
            try:
                await binding.stop()
            except Exception:
                log.exception("binding %s failed to stop", binding.name)
            binding.state = "stopped"
        servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            await server.stop()
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            try:
                await sub.stop(drain=True)
            except Exception:
                log.exception("a from_topic subscription of the bindings failed to stop")

    async def close_outputs(self) -> None:
        """Close the output bindings (the app does it after its handlers drained)."""
        if not self._outputs_open:
            return
        self._outputs_open = False
        for output in self.outputs:
            try:
                await output.close()
            except Exception:
                log.exception("binding %s failed to close", output.name)
            output.state = "stopped"

    def describe(self) -> list[dict[str, Any]]:
        """One row per binding: name, type, direction, state, counts (``mesh bindings list``)."""
        return [
            {
                "name": b.name,
                "type": b.type,
                "direction": b.direction,
                "state": b.state,
                "counts": b.stats.as_dict(),
            }
            for b in self.bindings.values()
        ]

    def __repr__(self) -> str:
        return f"BindingsBlock({', '.join(self.bindings) or 'none'})"
