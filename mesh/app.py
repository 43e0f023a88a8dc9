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
from builtins import type as builtins_type
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from mesh.actors.actor import Actor
from mesh.actors.block import ActorsBlock
from mesh.actors.proxy import ActorProxy
from mesh.batch import BatchPolicy, PublishResult
from mesh.bindings import BindingsBlock, OutputBinding
from mesh.brokers import Broker, Subscription
from mesh.components import Registry
from mesh.config import MeshConfig, load_config
from mesh.errors import ConfigError, InvocationError, MeshError
from mesh.event import Event, ExtensionValue, new_id
from mesh.extensions import JOB
from mesh.hooks import Hooks, PluginManager
from mesh.invoke import Callee, Caller
from mesh.invoke.presence import Presence
from mesh.jobs.block import JobsBlock
from mesh.names import InvalidName, check_app_id, check_subscription, check_topic
from mesh.pipeline import HandlerSpec, Route, data_adapter
from mesh.pipeline.batch import batch_spec
from mesh.resiliency.config import unknown_topics
from mesh.runtime import Runtime
from mesh.security.secrets import Secrets
from mesh.state import StateStore
from mesh.state.block import StateBlock

__all__ = ["App"]

log = logging.getLogger("mesh.app")

F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A", bound=type[Actor])
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
        try:
            check_app_id(id)
        except InvalidName as exc:
            raise ConfigError([("app.id", str(exc))]) from None
        self.id = id
        self.version = version
        self.instance_id = f"{id}-{new_id()[:8]}"
        self.source = f"/{id}"
        self.plugins = PluginManager(plugins)
        self.hooks = Hooks(self.plugins)
        registry = Registry()
        self.hooks.register_components(registry)
        self.components = registry
        self.config: MeshConfig = load_config(config, registry=registry)
        self.plugins.disable(self.config.plugins.disable)
        self.plugins.check()
        self.secrets = Secrets(self.config, registry)
        """This app's secret stores: ``await app.secrets.get("vault", "db-password")``."""
        self.broker: Broker = self._make_broker()
        self.runtime = Runtime(
            id=id,
            version=version,
            instance_id=self.instance_id,
            config=self.config,
            registry=registry,
            hooks=self.hooks,
            broker=self.broker,
        )
        """What the parts of this instance and the plugins see of it."""
        self._routes: dict[tuple[str, str], Route] = {}
        self._subscriptions: list[Subscription] = []
        self.callee = Callee(self.runtime)
        """This app's methods and the subscription serving them."""
        self.presence = Presence(self.runtime, self._offers)
        """Who is live on the mesh, and this instance's heartbeats."""
        self.caller = Caller(self.runtime, self.presence)
        """This instance's outgoing calls: reply topic and pending replies."""
        self._state = StateBlock(
            id,
            {name: {"type": c.type, **c.options} for name, c in self.config.state.items()},
            registry,
            self.runtime.send,
            self.runtime.spawn,
            log,
        )
        self.bindings = BindingsBlock(self.runtime)
        """This app's input and output bindings (``bindings:`` in the config)."""
        self.declared_publishes: list[tuple[str, str, Any]] = []
        """(topic, type, data type) of each :meth:`publishes` declaration."""
        self.jobs = self.runtime.jobs = JobsBlock(self.runtime, self._state, self.config.jobs)
        """This app's jobs: ``schedule``/``cancel``/``get``/``list``/``trigger`` (see docs/jobs.md)."""
        self.actors = ActorsBlock(self.runtime, self._state, self.presence, self.config.actors)
        """The actor types this app hosts, and calls to any actor (``app.actor(...)``)."""
        self.presence.hosted = self.actors.heartbeat
        self.started = False
        self._invocable = False  # from start until handlers drained at stop (they may invoke)
        self.hooks.configure(self.runtime, self.config)

    def _make_broker(self) -> Broker:
        conf = self.config.broker
        kwargs: dict[str, Any] = {
            "options": conf.options,
            "content_mode": conf.content_mode,
            "namespace": conf.namespace,
            "client_id": self.instance_id,
        }
        if conf.tls is not None:  # only when set: a plugin's broker need not know these
            kwargs["tls"] = conf.tls
        if conf.auth is not None:
            kwargs["auth"] = conf.auth
        broker: Broker = self.components.load("broker", conf.type)(conf.url, **kwargs)
        return broker

    def state(self, name: str) -> StateStore:
        """The state store ``name`` of the config's ``state:`` section (get/set/delete, ETags, TTL,
        transactions, queries; see docs/state.md). With no ``state:`` section every name is an
        in-process memory store."""
        return self._state.store(name)

    def use_broker(self, broker: Broker) -> None:
        """Run this (not yet started) app on ``broker`` instead of the one its config names (tests)."""
        if self.started:
            raise MeshError(f"{self.id} already started: change its broker before starting it")
        self.broker = self.runtime.broker = broker
        self.runtime.publish = broker.publish

    def ready(self) -> tuple[bool, str]:
        """Whether this instance is ready for traffic (``/readyz``), and why not."""
        if not self.started:
            return False, f"{self.id} is not started" if not self._invocable else f"{self.id} is draining"
        return True, f"{self.id}: {self.broker.type} connected, {len(self._subscriptions)} subscription(s) consuming"

    def _offers(self) -> tuple[dict[str, bool], list[tuple[str, str]]]:
        methods = {name: spec.idempotent for name, spec in self.callee.methods.items()}
        return methods, [(route.topic, route.group) for route in self._routes.values()]

    @property
    def plugin_state(self) -> dict[str, Any]:
        """Per-app state of plugins, by plugin name (the runtime's)."""
        return self.runtime.plugin_state

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
        actor: str | None = None,
        batch: BatchPolicy | None = None,
        **extensions: Any,
    ) -> Callable[[F], F]:
        """Register a handler for events on ``topic``.

        With ``batch=BatchPolicy(max_size, max_wait)`` the handler takes a list of events
        (``list[Event]``, ``list[Context]``, ``list[Model]`` or ``list`` of data) collected up
        to ``max_size`` or for ``max_wait``; each event is still acked, retried or
        dead-lettered on its own, and raising :class:`~mesh.errors.BatchFailed` names the
        items that failed (see :mod:`mesh.pipeline.batch` and docs/batches.md).

        With ``actor=TYPE`` the events are routed instead: each becomes a call of
        ``on_event(event)`` on the actor whose id is the event's ``subject`` (the registration
        happens at once; the decorator, if used, returns what it decorates unchanged). An
        event without a subject is dead-lettered; a failed call is retried like a handler.

        Filters on CloudEvent attributes (``type``, ``source``, ``subject``, any extension)
        take an exact value, a glob (``shop.order.*``), a list of values or a predicate. Within
        one app and group an event goes to the first handler whose filters match. ``group``
        defaults to the app id: instances of the app share the work, other apps each get every
        event. The handler's parameters are filled by annotation: :class:`~mesh.Event`, a
        pydantic model or any type for the data, :class:`~mesh.Context`.
        """
        namespace = self.config.broker.namespace
        check_topic(topic, namespace=namespace)
        check_subscription(topic, group or self.id, namespace=namespace)
        filters = {k: v for k, v in {"type": type, "source": source, "subject": subject}.items() if v is not None}
        filters.update(extensions)
        if actor is not None:
            if batch is not None:
                raise MeshError("batch= does not apply to actor routing (each event is one actor call)")
            self._route_to_actor(topic, group, concurrency, filters, actor)
            return lambda target: target
        if batch is not None and not isinstance(batch, BatchPolicy):
            raise TypeError(f"batch= takes a BatchPolicy, not {builtins_type(batch).__name__}")

        def register(fn: F) -> F:
            if self.started:
                raise MeshError("subscribe before the app starts")
            key = (topic, group or self.id)
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = Route(self.runtime, topic, key[1])
            if batch is not None:
                route.add(batch_spec(self.runtime, fn, topic, key[1], filters, concurrency, batch))
            else:
                route.add(HandlerSpec(fn, topic, key[1], filters, concurrency))
            return fn

        return register

    def _route_to_actor(self, topic: str, group: str | None, concurrency: int | None,
                        filters: dict[str, Any], actor_type: str) -> None:
        key = (topic, group or self.id)
        route = self._routes.setdefault(key, Route(self.runtime, topic, key[1]))
        route.add(HandlerSpec(self.actors.router(actor_type), topic, key[1], filters, concurrency))

    @overload
    def actor(self, type: str, id: None = None, *, idle_after: timedelta | float | None = None,
              reentrant: bool = False) -> Callable[[A], A]: ...
    @overload
    def actor(self, type: str, id: str) -> ActorProxy: ...

    def actor(self, type: str, id: str | None = None, *, idle_after: timedelta | float | None = None,
              reentrant: bool = False) -> Callable[[A], A] | ActorProxy:
        """``@app.actor(TYPE)`` hosts an :class:`~mesh.Actor` subclass as actor type ``TYPE``;
        ``app.actor(TYPE, ID)`` is a proxy to call one actor: ``await proxy.call(method, data)``.

        ``idle_after`` (default ``actors.idle_after``) deactivates an actor not called for that
        long; ``reentrant=True`` lets a call of the same call chain run inside the running turn.
        """
        if id is not None:
            return self.actors.proxy(type, id)
        seconds = idle_after.total_seconds() if isinstance(idle_after, timedelta) else idle_after

        def register(cls: A) -> A:
            if self.started:
                raise MeshError("register actor types before the app starts")
            self.actors.register(type, cls, idle_after=seconds, reentrant=reentrant)
            return cls

        return register

    def method(self, name: str | None = None, *, idempotent: bool = False) -> Callable[[F], F]:
        """Register a handler other apps call with ``invoke(<this app id>, name, data)``.

        Parameters are filled as for :meth:`subscribe` (typed data, :class:`~mesh.Event`,
        :class:`~mesh.Context`); the return value is the reply's data (a pydantic model
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

    def publishes(self, topic: str, *, type: str, data: Any = None) -> None:
        """Declare that this app publishes events of ``type`` (data of type ``data``) on ``topic``:
        what ``mesh asyncapi`` documents, and what presence heartbeats announce."""
        check_topic(topic, namespace=self.config.broker.namespace)
        self.declared_publishes.append((topic, type, data))
        self.presence.publishes.append({"topic": topic, "type": type})

    def job(self, name: str) -> Callable[[F], F]:
        """Register the handler a job named ``name`` calls when it fires (``app.jobs.schedule(name, ...)``
        without ``topic=``). It runs through the delivery pipeline (retries, dead letters, tracing);
        instances of the app share the fires; parameters are filled as for :meth:`subscribe`."""
        from mesh.jobs.model import check_name

        check_name(name)

        def register(fn: F) -> F:
            if self.started:
                raise MeshError("register job handlers before the app starts")
            key = (self.jobs.topic, self.id)
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = Route(self.runtime, key[0], key[1])
            route.add(HandlerSpec(fn, key[0], key[1], {JOB: name}, None))
            self.jobs.handlers.add(name)
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
        type: str | None = None,
        key: str | None = None,
        subject: str | None = None,
        source: str | None = None,
        id: str | None = None,
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        """Publish ``data`` as a CloudEvent of ``type`` on ``topic``; returns the event sent.

        ``key`` becomes the ``partitionkey`` extension: events with one key keep their order
        where the broker can. Returns once the broker has taken the event. ``data`` may also be
        a CloudEvents SDK ``CloudEvent`` (``type`` omitted): it is sent as it is, attributes kept.
        ``deliver_at`` (an aware datetime) stores it as a one-shot job instead: it is published
        at that time (a past time: at once), by whichever instance of the app runs then.
        """
        _check_topic(topic, self.config.broker.namespace)
        if type is None:
            from mesh.integrations.sdk import from_sdk, is_sdk_event

            if not is_sdk_event(data):
                raise MeshError("publish needs a type= (or a CloudEvents SDK CloudEvent as the data)")
            return await self.send(topic, from_sdk(data))
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
        if deliver_at is not None:
            return await self.jobs.deliver(topic, event, deliver_at)
        runtime = self.runtime
        if runtime.attribute_hooks:
            return await runtime.send(topic, event)
        runtime.check_size(topic, event)
        await runtime.publish(topic, event)  # send() without its attribute hooks: one frame less per event
        return event

    async def publish_many(
        self,
        topic: str,
        items: Iterable[Any],
        *,
        type: str | None = None,
        key: str | Callable[[Any], str | None] | None = None,
        subject: str | None = None,
        source: str | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> PublishResult:
        """Publish many events to ``topic`` at once, pipelined; returns which ones failed and why.

        Each item is the data of one CloudEvent of ``type`` (the other attributes as for
        :meth:`publish`), or a ready-made :class:`~mesh.Event` sent as it is. ``key`` is one
        ``partitionkey`` for all, or a function of the item giving each its own (``None``: no
        key). Plugins see every event as they see a :meth:`publish`; the broker gets them in one
        pipelined write (one flush, one round of acknowledgements), in input order. Returns once
        the broker has taken or refused each: :attr:`PublishResult.failed` lists the refused
        ones with their index and error (call :meth:`PublishResult.raise_for_failures` to raise
        instead). Bad input (a mapping or string instead of a list, no ``type`` for plain data)
        raises before anything is sent.
        """
        _check_topic(topic, self.config.broker.namespace)
        events = _events_of(items, type, key, subject, source or self.source, datacontenttype, dataschema, extensions)
        return await self.runtime.send_many(topic, events)

    async def send(self, topic: str, event: Event) -> Event:
        """Publish a ready-made event (plugins' attributes are added); returns what was sent."""
        return await self.runtime.send(topic, event)

    def with_attributes(self, topic: str, event: Event) -> Event:
        """The event with the extensions plugins add to what this app sends (``mesh_publish_attributes``)."""
        return self.runtime.with_attributes(topic, event)

    def binding(self, name: str) -> OutputBinding[Any]:
        """The output binding ``name``: ``await app.binding("ledger").invoke("exec", {...})``."""
        return self.bindings.binding(name)

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
            return data_adapter(result_type)(data)
        except ValidationError as exc:
            raise InvocationError(
                f"the reply of {app}.{method} is not a {getattr(result_type, '__name__', result_type)}: {exc}"
            ) from exc

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker and start every subscription."""
        if self.started:
            return
        problems = unknown_topics(self.config.resiliency, {r.topic for r in self._routes.values()} |
                                  set(self.config.subscriptions))
        if problems:
            raise ConfigError([(self.config.where(p), m) for p, m in problems], self.config.source)
        self.runtime.build()
        self.runtime.publish = self.caller.resiliency.wrap_publish(self.runtime.publish)  # outbound topic policies
        self.caller.build()
        await self.broker.connect()
        try:
            await self._state.start()  # before the handlers, which may use it
            await self.jobs.start()  # after the state block: its store may be one of them
            await self._subscribe_routes()
            await self.callee.start()
            await self.actors.start()  # after the state block, whose store it uses
            await self.presence.start(listen=bool(self.callee.methods) or self.actors.hosting)
            await self.bindings.start()
        except BaseException:
            await self.presence.close()
            await self.actors.stop(0)
            await self.actors.close()
            await self.jobs.stop()
            await self._state.stop()
            await self.broker.close()
            raise
        self.started = self._invocable = True
        self.hooks.app_started(self.runtime)

    async def _subscribe_routes(self) -> None:
        """Subscribe every route, up to the broker's ``subscribe_concurrency`` at once (in order
        when 1); the first failure is raised once every call in flight has ended."""
        broker = self.broker
        routes = list(self._routes.values())
        for route in routes:
            route.build()
        width = max(1, broker.subscribe_concurrency)
        if width == 1 or len(routes) < 2:
            for route in routes:
                sub = await broker.subscribe(route.topic, route.group, route, concurrency=route.concurrency)
                self._subscriptions.append(sub)
            return
        gate = asyncio.Semaphore(width)
        failed: list[BaseException] = []

        async def one(route: Route) -> Subscription | None:
            async with gate:
                if failed:
                    return None  # an earlier one failed: start no more
                try:
                    return await broker.subscribe(route.topic, route.group, route, concurrency=route.concurrency)
                except BaseException as exc:
                    failed.append(exc)
                    raise

        results = await asyncio.gather(*(one(r) for r in routes), return_exceptions=True)
        self._subscriptions.extend(r for r in results if isinstance(r, Subscription))
        if failed:
            raise failed[0]

    async def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, let handlers in flight finish, then disconnect.

        Handlers get ``timeout`` seconds to finish (default ``drain_timeout`` from the config,
        30 s, like Kubernetes' grace period); after it they are cancelled and their deliveries
        given back to the broker (nacked, so another instance gets them: never lost).
        """
        if not self.started:
            return
        self.started = False
        runtime = self.runtime
        try:
            await self.bindings.stop()  # no new input first; output bindings close after the drain
            self.hooks.app_stopping(runtime)
        finally:
            await self.presence.leave()  # callers stop choosing this instance; in-flight calls finish
            subs, self._subscriptions = self._subscriptions, []
            await self._drain(subs, self.config.drain_timeout if timeout is None else timeout)
            await self.actors.stop(self.config.drain_timeout if timeout is None else timeout)  # turns end, leases go
            await self.jobs.stop()  # claims not yet fired go back; before the store closes
            await self._state.stop()  # relays hand over their lease; stores close
            await runtime.cancel_tasks()
            await runtime.run_stop_callbacks()
            self._invocable = False
            await self.caller.close()
            await self.actors.close()
            await self.presence.close()
            await self.broker.close()

    async def _drain(self, subs: list[Subscription], timeout: float) -> None:
        stopping = [asyncio.ensure_future(sub.stop(drain=True)) for sub in subs]
        stopping.append(asyncio.ensure_future(self.callee.stop()))
        _, pending = await asyncio.wait(stopping, timeout=max(0.0, timeout))
        if not pending:
            return
        log.warning(
            "%s: handlers still running after the drain timeout (%gs); cancelling them, their deliveries "
            "go back to the broker",
            self.id,
            timeout,
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task for as long as the app runs (cancelled at stop)."""
        return self.runtime.spawn(coro, name)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` when the app stops, after its handlers drained (last added runs first)."""
        self.runtime.on_stop(callback)

    async def join(self, timeout: float = 10.0) -> None:
        """Wait until the broker has no pending deliveries (memory broker; for demos and tests)."""
        join: Callable[..., Awaitable[None]] | None = getattr(self.broker, "join", None)
        if join is None:
            raise MeshError(f"{self.broker.type} cannot tell when it is idle; wait for your own condition")
        await join(timeout=timeout)

    async def run(self, stop: asyncio.Event | None = None, *, drain_timeout: float | None = None) -> None:
        """Serve until SIGINT/SIGTERM (or ``stop`` is set), then drain (up to ``drain_timeout``) and stop."""
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
            await self.start()
            try:
                await stop.wait()
            finally:
                await self.stop(drain_timeout)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def __repr__(self) -> str:
        return f"App({self.id!r}, broker={self.config.broker.type})"


_CHECKED: set[tuple[str, str]] = set()


def _events_of(
    items: Iterable[Any],
    type: str | None,
    key: str | Callable[[Any], str | None] | None,
    subject: str | None,
    source: str,
    datacontenttype: str | None,
    dataschema: str | None,
    extensions: Mapping[str, ExtensionValue] | None,
) -> list[Event]:
    """The events of a ``publish_many`` (every check done before anything is sent)."""
    if isinstance(items, str | bytes | bytearray | Mapping) or not isinstance(items, Iterable):
        raise TypeError(
            f"publish_many takes a list of items (the data of each event, or Events), not a "
            f"{builtins_type(items).__name__}: wrap a single item in a list"
        )
    events: list[Event] = []
    base = dict(extensions) if extensions else {}
    for index, item in enumerate(items):
        if isinstance(item, Event):
            events.append(item)
            continue
        if type is None:
            raise MeshError(f"publish_many needs a type= for plain data (item {index} is not an Event)")
        ext = base
        item_key = key(item) if callable(key) else key
        if item_key is not None:
            ext = {**base, "partitionkey": item_key}
        events.append(
            Event(
                type,
                source,
                item,
                subject=subject,
                datacontenttype=datacontenttype,
                dataschema=dataschema,
                extensions=ext or None,
            )
        )
    return events


def _check_topic(topic: str, namespace: str) -> None:
    """The topic's name checked once per process (publish is the hot path)."""
    if (topic, namespace) in _CHECKED:
        return
    check_topic(topic, namespace=namespace)
    if len(_CHECKED) < 10_000:
        _CHECKED.add((topic, namespace))
