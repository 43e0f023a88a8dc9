"""Built-in archive plugin: record published and consumed events for replay and redrive.

Off unless configured; the section turns it on::

    plugins:
      config:
        archive:
          url: sqlite:///var/lib/mesh/archive.db      # or postgresql://mesh@db:5432/mesh
          record: [published, consumed]
          topics: ["orders", "payments.*"]            # globs; default every topic
          retention: 30d
          durable: false                              # true: publish returns once recorded

Publishing appends the event to an in-memory buffer after the broker took it; a background task
(started with the app, flushed when it stops) writes batches. A consumed event is buffered before
its handler runs. Dead letters are always recorded before the dead-letter write is acked, whatever
``topics`` says, so ``mesh dlq`` sees every one. What "recorded" guarantees is spelt out in
:mod:`mesh.archive.recorder`; the store and its schema in :mod:`mesh.archive`. See
``docs/replay.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.archive import DEAD_LETTER_MARK, archive_settings, open_archive
from mesh.archive.recorder import Recorder
from mesh.event import Event
from mesh.hooks import hookimpl
from mesh.types import Context, Handle, HandlerLayer, Publish, PublishLayer, SubscriptionInfo

if TYPE_CHECKING:
    from mesh.config import MeshConfig
    from mesh.runtime import Runtime

name = "archive"


def recorder_of(runtime: Runtime) -> Recorder | None:
    """The app's recorder, when the archive is on for it."""
    recorder: Recorder | None = runtime.plugin_state.get(name)
    return recorder


@hookimpl
def mesh_configure(runtime: Runtime, config: MeshConfig) -> None:
    settings = archive_settings(config)
    if settings is None:
        return
    recorder = Recorder(open_archive(settings.url, settings.table), settings, runtime.id)
    runtime.plugin_state[name] = recorder
    runtime.on_stop(recorder.close)


@hookimpl
def mesh_app_started(runtime: Runtime) -> None:
    recorder = recorder_of(runtime)
    if recorder is not None:
        runtime.spawn(recorder.run(), name=f"mesh-archive:{runtime.id}")


@hookimpl
def mesh_publish_layers(runtime: Runtime) -> PublishLayer | None:
    recorder = recorder_of(runtime)
    if recorder is None:
        return None
    settings = recorder.settings
    published = "published" in settings.record
    dead_letters = settings.dead_letters
    durable = settings.durable
    if not published and not dead_letters:
        return None

    def layer(next_: Publish) -> Publish:
        async def publish(topic: str, event: Event) -> None:
            await next_(topic, event)
            dead = DEAD_LETTER_MARK in event.extensions
            if not (published or (dead and dead_letters)) or not recorder.wants(topic, event):
                return
            if durable or dead:
                await recorder.record(topic, event, "published", wait=True)
            elif not recorder.add_nowait(topic, event, "published"):
                await recorder.record(topic, event, "published")

        return publish

    return layer


@hookimpl
def mesh_handler_layers(runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer | None:
    recorder = recorder_of(runtime)
    if recorder is None or "consumed" not in recorder.settings.record or not recorder.wants(subscription.topic):
        return None
    topic, group, durable = subscription.topic, subscription.group, recorder.settings.durable

    def layer(next_: Handle) -> Handle:
        async def handle(ctx: Context) -> Any:
            event = ctx.event
            if event is not None:
                if durable:  # committed before the handler runs, so never acked unrecorded
                    await recorder.record(topic, event, "consumed", group, wait=True)
                elif not recorder.add_nowait(topic, event, "consumed", group):
                    await recorder.record(topic, event, "consumed", group)
            return await next_(ctx)

        return handle

    return layer
