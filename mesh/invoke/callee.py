"""The serving side of invocation: an app's methods behind its invocation destination.

The app consumes ``_mesh.invoke.<app id>`` with its app id as the group, so its instances share
the requests, and each instance also its own ``_mesh.invoke.<app id>.<instance id>`` (where callers that
chose it send, see :mod:`mesh.resiliency.instances`), both through the ordinary delivery pipeline
(tracing's process span, metrics, the dead-letter destination for requests nobody can answer).
Every request gets exactly one reply unless it is dropped on purpose:

==================  =======================================================================
request             what happens
==================  =======================================================================
deadline passed     dropped, not run (the caller gave up); counted as ``expired``
probe (``_mesh.ping``)  ok reply at once, no method runs (a caller readmitting an ejected instance)
caller not allowed  error reply ``PermissionDenied`` (code ``permission_denied``); with signing
                    on, the caller is the verified signer, and a request that fails
                    verification is answered so too, with the reason

unknown method      error reply ``MethodNotFound`` (code ``method_not_found``)
data does not fit   error reply ``InvalidArgument`` (code ``invalid_argument``)
method raises       error reply with the exception's class name, message and code
method returns      ok reply with the return value (a pydantic model is sent as JSON)
malformed           error reply (code ``malformed``) if it names a reply topic, else dead-lettered
==================  =======================================================================

The handler never raises for a request it could answer, so the retry plugin never runs a method
twice for one request: a retry is the caller's decision (idempotent methods only).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mesh.brokers.base import Subscription
from mesh.errors import DeadLetter, MeshError, PluginError
from mesh.event import Event, now
from mesh.invoke.protocol import (
    INVALID_ARGUMENT,
    MALFORMED,
    METHOD_NOT_FOUND,
    PERMISSION_DENIED,
    PING,
    MalformedMessage,
    error_data,
    error_reply,
    instance_topic,
    invoke_topic,
    ok_reply,
    parse_request,
    reply_address,
)
from mesh.pipeline import HandlerSpec, Route
from mesh.security import caller_identity, seal
from mesh.types import Context

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["Callee", "MethodSpec"]

log = logging.getLogger("mesh.invoke")


class MethodSpec:
    """One ``@app.method``: its name, whether retrying it is safe, and how to call it."""

    __slots__ = ("handler", "idempotent", "name")

    def __init__(self, name: str, fn: Callable[..., Any], idempotent: bool, topic: str, group: str) -> None:
        self.name = name
        self.idempotent = idempotent
        self.handler = HandlerSpec(fn, topic, group, {}, None)


class Callee:
    """An App's methods and the subscription that serves them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.topic = invoke_topic(runtime.id)
        self.methods: dict[str, MethodSpec] = {}
        self._sub: Subscription | None = None
        self._direct: Subscription | None = None
        self.direct = runtime.config.resiliency.instances.enabled
        """Whether this instance also serves its own request destination (announced in presence)."""
        conf = runtime.config.invoke
        self._allow = conf.allow
        self._traceback = conf.include_traceback
        self._concurrency = conf.concurrency
        self._hooks = False

    def add(self, name: str, fn: Callable[..., Any], idempotent: bool) -> None:
        """Register a method (before the app starts)."""
        if name in self.methods:
            raise MeshError(f"method {name!r} of {self.runtime.id} is registered twice")
        self.methods[name] = MethodSpec(name, fn, idempotent, self.topic, self.runtime.id)

    async def start(self) -> None:
        """Consume the invocation destination (when the app has methods)."""
        if not self.methods:
            return
        self._hooks = self.runtime.hooks.implements("mesh_invocation_outcome")
        route = Route(self.runtime, self.topic, self.runtime.id)
        route.add(HandlerSpec(self.serve, self.topic, self.runtime.id, {}, self._concurrency))
        route.build()
        self._sub = await self.runtime.broker.subscribe_ephemeral(
            self.topic, route, group=self.runtime.id, concurrency=route.concurrency
        )
        if self.direct:
            topic = instance_topic(self.runtime.id, self.runtime.instance_id)
            own = Route(self.runtime, topic, self.runtime.id)
            own.add(HandlerSpec(self.serve, topic, self.runtime.id, {}, self._concurrency))
            own.build()
            self._direct = await self.runtime.broker.subscribe_ephemeral(
                topic, own, exclusive=True, concurrency=own.concurrency
            )

    async def stop(self) -> None:
        """Stop taking requests; those in hand are answered first."""
        subs = [s for s in (self._sub, self._direct) if s is not None]
        self._sub = self._direct = None
        await asyncio.gather(*(sub.stop(drain=True) for sub in subs))

    @property
    def subscription(self) -> Subscription | None:
        """The running subscription of the invocation destination, if any."""
        return self._sub

    def allowed(self, method: str, caller: str) -> bool:
        """Whether ``invoke.allow`` lets ``caller`` call ``method`` (everyone when it is unset)."""
        allow = self._allow
        if allow is None:
            return True
        callers = allow.get(method, allow.get("*"))
        return callers is not None and ("*" in callers or caller in callers)

    # -- serving one request -----------------------------------------------------------------

    async def serve(self, ctx: Context) -> None:
        """The handler of the invocation destination (see the module docstring)."""
        event = ctx.event
        assert event is not None  # undecodable messages are dead-lettered before handlers
        try:
            request = parse_request(event)
        except MalformedMessage as exc:
            self._outcome(event, "malformed", exc)
            if reply_address(event) is None:
                raise DeadLetter(f"malformed invocation request: {exc}") from exc
            data = error_data(type="MalformedRequest", message=str(exc), code=MALFORMED)
            await self._reply(event, error_reply(event, self.runtime.source, data))
            return
        if request.deadline is not None and request.deadline <= now():
            log.debug("dropped request %s for %s: its deadline passed", request.id, request.method)
            self._outcome(event, "expired", None)
            return
        if request.method == PING and request.reply_to is not None:  # a probe: alive and taking requests
            await self._reply(event, ok_reply(event, self.runtime.source, None))
            return
        caller, rejected = caller_identity(ctx, request.caller)
        if rejected is not None or not self.allowed(request.method, caller):
            message = rejected or f"{caller or 'an unsigned caller'!r} may not call {self.runtime.id}.{request.method}"
            await self._error(event, type="PermissionDenied", message=message, code=PERMISSION_DENIED)
            return
        spec = self.methods.get(request.method)
        if spec is None:
            message = f"{self.runtime.id} has no method {request.method!r} (it has: {', '.join(sorted(self.methods))})"
            await self._error(event, type="MethodNotFound", message=message, code=METHOD_NOT_FOUND)
            return
        try:
            kwargs = spec.handler.arguments(ctx)
        except DeadLetter as exc:  # the data does not fit the method's parameters
            await self._error(event, type="InvalidArgument", message=exc.reason, code=INVALID_ARGUMENT)
            return
        try:
            result = spec.handler.fn(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            await self._error(event, exc)
            return
        if request.reply_to is None:  # a one-way call: nobody waits for the answer
            self._outcome(event, "ok", None)
            return
        try:
            reply = seal(self.runtime, request.reply_to, ok_reply(event, self.runtime.source, result))
            await self.runtime.broker.publish_ephemeral(request.reply_to, reply)
        except MeshError as exc:  # e.g. the return value cannot be serialised
            await self._error(event, exc)
            return
        self._outcome(event, "ok", None)

    async def _error(self, request: Event, exc: BaseException | None = None, **parts: Any) -> bool:
        data = error_data(exc, include_traceback=self._traceback, **parts)
        code = data["code"]
        self._outcome(
            request, code if code in (PERMISSION_DENIED, METHOD_NOT_FOUND, INVALID_ARGUMENT) else "error", exc
        )
        return await self._reply(request, error_reply(request, self.runtime.source, data))

    async def _reply(self, request: Event, reply: Event) -> bool:
        reply_to = reply_address(request)
        if reply_to is None:
            return False
        try:
            await self.runtime.broker.publish_ephemeral(reply_to, seal(self.runtime, reply_to, reply))
        except MeshError as exc:  # the caller times out; running the method again would not help
            log.warning("reply to request %s on %s not sent: %s", request.id, reply_to, exc)
            return False
        return True

    def _outcome(self, request: Event, outcome: str, error: BaseException | None) -> None:
        if not self._hooks:
            return
        try:
            self.runtime.hooks.invocation_outcome(
                self.runtime,
                "callee",
                request.subject if request.subject in self.methods else "<unknown>",
                request.source.removeprefix("/"),
                outcome,
                error,
            )
        except PluginError:
            log.exception("a plugin failed in mesh_invocation_outcome")
