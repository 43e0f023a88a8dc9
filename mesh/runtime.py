"""The narrow object the parts of one App instance share: ids, config, broker, hooks, tasks.

The App builds one :class:`Runtime` and hands it to every part (the delivery pipeline,
invocation, presence, the blocks) and to every hook that concerns an instance. Parts never see
the App, so nothing below :mod:`mesh.app` imports it.

==================  =====================================================================
member              what
==================  =====================================================================
``id``, ``source``  the app id and the CloudEvents ``source`` it writes (``/<id>``)
``instance_id``     this process's instance (``<id>-<8 hex>``), ``version`` the app's
``config``          the validated :class:`~mesh.config.MeshConfig`
``registry``        the component types (built-ins plus plugins')
``broker``          the connected :class:`~mesh.brokers.base.Broker`
``hooks``           :class:`~mesh.hooks.manager.Hooks`, one typed method per hook
``send``            publish a ready event through the plugins' attributes and layers
``send_many``       publish many ready events of one topic the same way, pipelined
``spawn``           run a background task until the app stops (cancelled then)
``on_stop``         await a callback when the app stops, after its handlers drained
``plugin_state``    per-app state of plugins, by plugin name
``jobs``            the jobs block (schedules), for parts that fire on time
==================  =====================================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from mesh.batch import PublishResult
from mesh.bulk import collecting, publish_many, result_of
from mesh.codecs.data import encode_data
from mesh.errors import EncodeError, MeshError
from mesh.event import Event, ExtensionValue

if TYPE_CHECKING:
    from mesh.brokers.base import Broker
    from mesh.components import Registry
    from mesh.config import MeshConfig
    from mesh.hooks.manager import Hooks
    from mesh.jobs.block import JobsBlock
    from mesh.types import Publish

__all__ = ["Runtime"]

log = logging.getLogger("mesh.app")


class Runtime:
    """One app instance as its parts and plugins see it (see the module docstring)."""

    def __init__(
        self,
        *,
        id: str,
        version: str,
        instance_id: str,
        config: MeshConfig,
        registry: Registry,
        hooks: Hooks,
        broker: Broker,
    ) -> None:
        self.id = id
        self.version = version
        self.instance_id = instance_id
        self.source = f"/{id}"
        self.config = config
        self.registry = registry
        self.hooks = hooks
        self.broker = broker
        self.plugin_state: dict[str, Any] = {}
        """Per-app state of plugins, by plugin name."""
        self.jobs: JobsBlock | None = None
        """The app's jobs block, for parts that schedule (cron bindings, actor reminders)."""
        self.publish: Publish = broker.publish
        """The publish chain (the plugins' publish layers around the broker), built at start."""
        self.publish_batched: Publish | None = None
        """The publish layers around the batch collector (:mod:`mesh.bulk`); ``None``: no layer."""
        self.attribute_hooks = False
        """Whether a plugin adds attributes to outgoing events (checked once at start)."""
        self.outcome_hooks = False
        """Whether a plugin wants ``mesh_delivery_outcome`` (checked once at start)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        from mesh.pipeline.settle import FailureMemory  # the pipeline's record, kept per instance

        self.failures = FailureMemory()
        """When each failing event first failed here, and how often its dead-lettering failed."""

    def build(self) -> None:
        """Compose the publish layers and note which hot-path hooks are implemented (at start)."""
        hooks = self.hooks
        self.attribute_hooks = hooks.implements("mesh_publish_attributes")
        self.outcome_hooks = hooks.implements("mesh_delivery_outcome")
        publish: Publish = self.broker.publish
        layers = hooks.publish_layers(self)
        for layer in reversed(layers):
            publish = layer(publish)
        self.publish = publish
        batched: Publish | None = None
        if layers:
            batched = collecting(self.broker)
            for layer in reversed(layers):
                batched = layer(batched)
        self.publish_batched = batched

    # -- publishing --------------------------------------------------------------------------

    async def send(self, topic: str, event: Event) -> Event:
        """Publish a ready-made event (plugins' attributes are added); returns what was sent."""
        if self.attribute_hooks:
            event = self.with_attributes(topic, event)
        self.check_size(topic, event)
        await self.publish(topic, event)
        return event

    async def send_many(self, topic: str, events: Iterable[Event]) -> PublishResult:
        """Publish ready-made events to one topic, pipelined (see :mod:`mesh.bulk`): plugins'
        attributes and publish layers apply to each event; returns which ones failed and why."""
        sent: list[Event] = []
        failed: dict[int, Exception] = {}
        going: list[Event] = []
        where: list[int] = []
        for index, event in enumerate(events):
            try:
                if self.attribute_hooks:
                    event = self.with_attributes(topic, event)
                self.check_size(topic, event)
            except MeshError as exc:
                failed[index] = exc
            else:
                going.append(event)
                where.append(index)
            sent.append(event)
        if going:
            for position, error in (await publish_many(self.broker, self.publish_batched, topic, going)).items():
                failed[where[position]] = error
        return result_of(sent, failed)

    def check_size(self, topic: str, event: Event) -> None:
        """Raise :class:`~mesh.errors.EncodeError` if the event's data is over ``max_event_bytes``."""
        if event.data is None:
            return
        size = len(encode_data(event))
        limit = self.config.max_event_bytes
        if size > limit:
            raise EncodeError(
                f"event {event.type!r} for {topic!r} has {size:,} bytes of data, over max_event_bytes "
                f"({limit:,}): send a reference (the 'dataref' extension) to where the data is kept "
                "instead, or raise the limit"
            )

    def with_attributes(self, topic: str, event: Event) -> Event:
        """The event with the extensions plugins add to what this app sends (``mesh_publish_attributes``)."""
        extra: dict[str, ExtensionValue] = {}
        for attrs in self.hooks.publish_attributes(self, topic, event):
            for name, value in attrs.items():
                extra.setdefault(name, value)
        new = {k: v for k, v in extra.items() if k not in event.extensions}
        return event.with_extensions(**new) if new else event

    # -- background work ---------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task for as long as the app runs (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` when the app stops, after its handlers drained (last added runs first)."""
        self._on_stop.append(callback)

    async def cancel_tasks(self) -> None:
        """Cancel the background tasks and wait for them to end."""
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_stop_callbacks(self) -> None:
        """Await the ``on_stop`` callbacks, last added first; one that fails is logged."""
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:
                log.exception("a stop callback of %s failed", self.id)

    def __repr__(self) -> str:
        return f"Runtime({self.id!r}, instance={self.instance_id!r}, broker={self.broker.type})"
