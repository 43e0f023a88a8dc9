"""The App: decorators to register handlers, publishing, and the lifecycle of one service instance.

>>> import asyncio
>>> from mesh import App, Event
>>> app = App("doc", config={"broker": {"type": "memory", "options": {"name": "app-doctest"}}})
>>> seen = []
>>> @app.subscribe("greetings", type="hello")
... async def on_hello(event: Event) -> None:
...     seen.append(event.data["name"])
>>> async def main():
...     async with app:
...         await app.publish("greetings", {"name": "Ada"}, type="hello")
...         await app.join()
>>> asyncio.run(main()); seen
['Ada']
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from mesh.brokers import Broker, Subscription
from mesh.brokers.base import RESERVED_PREFIX
from mesh.codecs.data import encode_data
from mesh.config import MeshConfig, load_config
from mesh.dispatch import FailureMemory, HandlerSpec, Publish, Route, _data_adapter
from mesh.errors import ConfigError, EncodeError, InvocationError, MeshError
from mesh.event import Event, ExtensionValue, new_id
from mesh.invoke import Callee, Caller
from mesh.plugin_manager import PluginManager, Registry
from mesh.presence import Presence

__all__ = ["App"]

log = logging.getLogger("mesh.app")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class App:
    """One service of the mesh: an app id, a broker from config, handlers and plugins.

    Config comes from ``config`` (a path, a dict or a :class:`~mesh.config.MeshConfig`), else
    ``$MESH_CONFIG``, else ``./mesh.yaml``, else the in-process memory broker. Extra plugin
    objects may be passed in ``plugins``; built-ins and entry-point plugins load by themselves.
    """

    def __init__(
        self,
        id: str,
        *,
        config: str | os.PathLike[str] | Mapping[str, Any] | MeshConfig | None = None,
        plugins: tuple[object, ...] | list[object] = (),
        version: str = "0",
    ) -> None:
        if not id or not isinstance(id, str) or id.startswith(RESERVED_PREFIX):
            raise ConfigError([("app.id", f"invalid app id {id!r}")])
        self.id = id
        self.version = version
        self.instance_id = f"{id}-{new_id()[:8]}"
        self.source = f"/{id}"
        self.plugins = PluginManager(plugins)
        registry = Registry()
        self.plugins.call("mesh_register_components", registry=registry)
        self.components = registry
        self.config: MeshConfig = load_config(config, registry=registry)
        self.plugins.disable(self.config.plugins.disable)
        self.plugins.check()
        self.broker: Broker = self._make_broker()
        self._routes: dict[tuple[str, str], Route] = {}
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._publish: Publish = self.broker.publish
        self._attribute_hooks = False
        self.outcome_hooks = False
        self.failures = FailureMemory()
        self.plugin_state: dict[str, Any] = {}
        """Per-app state of plugins, by plugin name."""
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self.callee = Callee(self)
        """This app's methods and the subscription serving them."""
        self.caller = Caller(self)
        """This instance's outgoing calls: reply topic and pending replies."""
        self.presence = Presence(self)
        """Who is live on the mesh, and this instance's heartbeats."""
        self.started = False
        self._invocable = False  # from start until handlers drained at stop (they may invoke)
        self.plugins.call("mesh_configure", app=self, config=self.config)

    def _make_broker(self) -> Broker:
        conf = self.config.broker
        kwargs: dict[str, Any] = {
            "options": conf.options,
            "content_mode": conf.content_mode,
            "namespace": conf.namespace,
            "client_id": self.instance_id,
        }
        broker: Broker = self.components.load("broker", conf.type)(conf.url, **kwargs)
        return broker

    # -- registration ------------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        *,
        group: str | None = None,
        concurrency: int | None = None,
        type: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        **extensions: Any,
    ) -> Callable[[F], F]:
        """Register a handler for events on ``topic``.

        Filters on CloudEvent attributes (``type``, ``source``, ``subject``, any extension)
        take an exact value, a glob (``shop.order.*``), a list of values or a predicate. Within
        one app and group an event goes to the first handler whose filters match. ``group``
        defaults to the app id: instances of the app share the work, other apps each get every
        event. The handler's parameters are filled by annotation: :class:`~mesh.Event`, a
        pydantic model or any type for the data, :class:`~mesh.dispatch.Context`.
        """
        _check_topic(topic)
        filters = {k: v for k, v in {"type": type, "source": source, "subject": subject}.items() if v is not None}
        filters.update(extensions)

        def register(fn: F) -> F:
            if self.started:
                raise MeshError("subscribe before the app starts")
            key = (topic, group or self.id)
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = Route(self, topic, key[1])
            route.add(HandlerSpec(fn, topic, key[1], filters, concurrency))
            return fn

        return register

    def method(self, name: str | None = None, *, idempotent: bool = False) -> Callable[[F], F]:
        """Register a handler other apps call with ``invoke(<this app id>, name, data)``.

        Parameters are filled as for :meth:`subscribe` (typed data, :class:`~mesh.Event`,
        :class:`~mesh.dispatch.Context`); the return value is the reply's data (a pydantic model
        is sent as JSON) and an exception becomes an error reply (type, message and code; its
        ``code`` attribute if it has a string one). Instances of the app share the calls.
        ``idempotent=True`` tells callers it is safe to send a call again when an instance dies
        with it in hand; leave it off for anything that must not run twice. ``name`` defaults
        to the function's name.
        """

        def register(fn: F) -> F:
            if self.started:
                raise MeshError("register methods before the app starts")
            self.callee.add(name or fn.__name__, fn, idempotent)
            return fn

        return register

    @property
    def routes(self) -> list[Route]:
        """Every (topic, group) this app consumes, with its handlers."""
        return list(self._routes.values())

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        data: Any = None,
        *,
        type: str,
        key: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        id: str | None = None,
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> Event:
        """Publish ``data`` as a CloudEvent of ``type`` on ``topic``; returns the event sent.

        ``key`` becomes the ``partitionkey`` extension: events with one key keep their order
        where the broker can. Returns once the broker has taken the event.
        """
        _check_topic(topic)
        ext = dict(extensions) if extensions else None
        if key is not None:
            ext = ext or {}
            ext["partitionkey"] = key
        event = Event(
            type,
            source or self.source,
            data,
            id=id,
            subject=subject,
            time=time,
            datacontenttype=datacontenttype,
            dataschema=dataschema,
            extensions=ext,
        )
        if self._attribute_hooks:
            return await self.send(topic, event)
        if event.data is not None and len(encode_data(event)) > self.config.max_event_bytes:
            raise self._too_big(topic, event)
        await self._publish(topic, event)  # send() without its attribute hooks: one frame less per event
        return event

    async def send(self, topic: str, event: Event) -> Event:
        """Publish a ready-made event (plugins' attributes are added); returns what was sent."""
        if self._attribute_hooks:
            event = self.with_attributes(topic, event)
        if event.data is not None and len(encode_data(event)) > self.config.max_event_bytes:
            raise self._too_big(topic, event)
        await self._publish(topic, event)
        return event

    def _too_big(self, topic: str, event: Event) -> EncodeError:
        return EncodeError(
            f"event {event.type!r} for {topic!r} has {len(encode_data(event)):,} bytes of data, over "
            f"max_event_bytes ({self.config.max_event_bytes:,}): send a reference (the 'dataref' "
            "extension) to where the data is kept instead, or raise the limit"
        )

    def with_attributes(self, topic: str, event: Event) -> Event:
        """The event with the extensions plugins add to what this app sends (``mesh_publish_attributes``)."""
        extra: dict[str, ExtensionValue] = {}
        for attrs in self.plugins.call("mesh_publish_attributes", app=self, topic=topic, event=event):
            for name, value in attrs.items():
                extra.setdefault(name, value)
        new = {k: v for k, v in extra.items() if k not in event.extensions}
        return event.with_extensions(**new) if new else event

    # -- invocation --------------------------------------------------------------------------

    @overload
    async def invoke(
        self,
        app: str,
        method: str,
        data: Any = None,
        *,
        result_type: type[T],
        timeout: float | None = None,
        key: str | None = None,
    ) -> T: ...

    @overload
    async def invoke(
        self,
        app: str,
        method: str,
        data: Any = None,
        *,
        result_type: None = None,
        timeout: float | None = None,
        key: str | None = None,
    ) -> Any: ...

    async def invoke(
        self,
        app: str,
        method: str,
        data: Any = None,
        *,
        result_type: Any = None,
        timeout: float | None = None,
        key: str | None = None,
    ) -> Any:
        """Call ``method`` of ``app`` with ``data`` and return the reply's data.

        ``result_type`` (a pydantic model or any type) validates and converts the reply.
        ``timeout`` defaults to ``invoke.timeout`` (10 s). ``key`` is the request's
        ``partitionkey`` (calls with one key keep their order where the broker keeps it).
        Raises :class:`~mesh.errors.InvocationTimeout` (a ``TimeoutError``),
        :class:`~mesh.errors.NoResponders` when no instance of ``app`` is live, and the
        callee's errors as :class:`~mesh.errors.RemoteError` (:class:`~mesh.errors.MethodNotFound`,
        :class:`~mesh.errors.PermissionDenied`) with their type, message and code.
        """
        if not self._invocable:
            raise MeshError(f"start {self.id} (async with app) before invoking")
        data = await self.caller.invoke(app, method, data, timeout, key)
        if result_type is None:
            return data
        try:
            return _data_adapter(result_type)(data)
        except ValidationError as exc:
            raise InvocationError(
                f"the reply of {app}.{method} is not a {getattr(result_type, '__name__', result_type)}: {exc}"
            ) from exc

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker and start every subscription."""
        if self.started:
            return
        self._attribute_hooks = bool(self.plugins.implementations("mesh_publish_attributes"))
        self.outcome_hooks = bool(self.plugins.implementations("mesh_delivery_outcome"))
        publish: Publish = self.broker.publish
        for layer in reversed(self.plugins.call("mesh_publish_layers", app=self)):
            publish = layer(publish)
        self._publish = publish
        self.caller.build()
        await self.broker.connect()
        try:
            for route in self._routes.values():
                route.build()
                sub = await self.broker.subscribe(route.topic, route.group, route, concurrency=route.concurrency)
                self._subscriptions.append(sub)
            await self.callee.start()
            await self.presence.start(listen=bool(self.callee.methods))
        except BaseException:
            await self.presence.close()
            await self.broker.close()
            raise
        self.started = self._invocable = True
        self.plugins.call("mesh_app_started", app=self)

    async def stop(self) -> None:
        """Stop consuming, let handlers in flight finish, then disconnect."""
        if not self.started:
            return
        self.started = False
        try:
            self.plugins.call("mesh_app_stopping", app=self)
        finally:
            await self.presence.leave()  # callers stop choosing this instance; in-flight calls finish
            subs, self._subscriptions = self._subscriptions, []
            for sub in subs:
                await sub.stop(drain=True)
            await self.callee.stop()
            tasks, self._tasks = list(self._tasks), set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for callback in reversed(self._on_stop):
                try:
                    await callback()
                except Exception:
                    log.exception("a stop callback of %s failed", self.id)
            self._invocable = False
            await self.caller.close()
            await self.presence.close()
            await self.broker.close()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task for as long as the app runs (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` when the app stops, after its handlers drained (last added runs first)."""
        self._on_stop.append(callback)

    async def join(self, timeout: float = 10.0) -> None:
        """Wait until the broker has no pending deliveries (memory broker; for demos and tests)."""
        join: Callable[..., Awaitable[None]] | None = getattr(self.broker, "join", None)
        if join is None:
            raise MeshError(f"{self.broker.type} cannot tell when it is idle; wait for your own condition")
        await join(timeout=timeout)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until SIGINT/SIGTERM (or ``stop`` is set), then drain and stop."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            async with self:
                await stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def __repr__(self) -> str:
        return f"App({self.id!r}, broker={self.config.broker.type})"


def _check_topic(topic: str) -> None:
    if not topic or not isinstance(topic, str):
        raise MeshError("a topic must be a non-empty string")
    if topic.startswith(RESERVED_PREFIX):
        raise MeshError(f"topic {topic!r} uses the reserved prefix {RESERVED_PREFIX!r}")
