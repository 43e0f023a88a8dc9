"""Built-in signing plugin: signed CloudEvents, verified senders, topic scopes, payload encryption.

Configured by ``security:`` (see :class:`mesh.config.models.SecurityConfig`); with nothing set it
adds no layer. What it adds, and where:

======================  ====================================================================
hook                    what
======================  ====================================================================
``mesh_configure``      builds the app's :class:`~mesh.security.guard.Security` (keys parsed
                        now: a bad key is a ``ConfigError`` at start, naming its path only)
``mesh_publish_layers`` ``tryfirst``: encrypt, then sign, outside every other publish layer, so
                        the archive and metrics see what goes on the wire
``mesh_handler_layers`` verify, check ``source`` and the publish scope, decrypt; the handler
                        (and inner layers) see the verified view and ``ctx.sender``; the
                        original is put back after, so retries and dead letters carry the
                        producer's signature. A rejection is counted and raised as
                        ``DeadLetter("<code>: ...")`` (dead-lettered with that reason, the
                        consumer goes on); on an invocation destination it is handed to the
                        callee instead, which answers ``PermissionDenied``. Subscribe scopes
                        are checked here, once per subscription at start
======================  ====================================================================

Invocation requests and replies do not pass through publish layers: :mod:`mesh.invoke` calls
:func:`mesh.security.seal` and :func:`mesh.security.open_reply` itself.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from mesh.config import MeshConfig
from mesh.errors import DeadLetter
from mesh.event import Event
from mesh.extensions import INVOKE_PREFIX
from mesh.hooks import hookimpl
from mesh.pipeline.stepping import taskless
from mesh.runtime import Runtime
from mesh.security import REJECTED, STATE, VERIFIED, Rejected, security_of
from mesh.security.guard import ScopeError, Security
from mesh.types import Context, Handle, HandlerLayer, Publish, PublishLayer, SubscriptionInfo

__all__ = ["rejections"]

log = logging.getLogger("mesh.security")


def rejections(runtime: Runtime) -> Counter[str]:
    """Rejected deliveries and replies of an app, by code (empty when signing is off)."""
    security = security_of(runtime)
    return security.rejected if security is not None else Counter()


@hookimpl
def mesh_configure(runtime: Runtime, config: MeshConfig) -> None:
    conf = config.security
    if conf.checking or conf.encryption.topics or conf.encryption.keys or conf.scopes.subscribe:
        runtime.plugin_state[STATE] = Security(runtime.id, conf)


@hookimpl(tryfirst=True)
def mesh_publish_layers(runtime: Runtime) -> PublishLayer | None:
    security = security_of(runtime)
    if security is None:
        return None
    seal = security.seal

    def layer(next_: Publish) -> Publish:
        async def publish(topic: str, event: Event) -> None:
            await next_(topic, seal(topic, event))

        return publish

    return layer


@hookimpl
def mesh_handler_layers(runtime: Runtime, subscription: SubscriptionInfo) -> HandlerLayer | None:
    security = security_of(runtime)
    if security is None:
        return None
    topic = subscription.topic
    if not security.may_subscribe(runtime.id, topic):
        raise ScopeError(f"{runtime.id} may not subscribe to {topic!r} (security.scopes.subscribe)")
    invocations = topic.startswith(INVOKE_PREFIX)
    checking = security.checking
    open_ = security.open

    def layer(next_: Handle) -> Handle:
        async def handle(ctx: Context) -> Any:
            original = ctx.event
            assert original is not None  # undecodable messages never reach handler layers
            try:
                view, sender = open_(topic, original)
            except Rejected as exc:
                security.count(exc.code)
                log.warning(
                    "rejected %s from %s (id %s) on %s: %s", original.type, original.source, original.id, topic, exc
                )
                if not invocations:
                    raise DeadLetter(str(exc)) from exc
                ctx.state[REJECTED] = str(exc)
                ctx.state[VERIFIED] = True
                return await next_(ctx)
            ctx.sender = sender
            if checking:
                ctx.state[VERIFIED] = True
            ctx.event = view
            try:
                return await next_(ctx)
            finally:
                ctx.event = original

        return handle

    return taskless(layer)
