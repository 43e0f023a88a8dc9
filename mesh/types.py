"""The types plugins and layers work with: what the hooks hand over and what they return.

================  ==============================================================================
type              what
================  ==============================================================================
Context           one delivery on its way through the pipeline (handler and settlement layers)
Decision          a retry or dead-letter decision (``mesh_retry_decision``)
SubscriptionInfo  what plugins see of one subscription: topic, group, handler name, settings
Invocation        one outgoing call on its way through the invoke layers
PublishBatch      the ``publish_many`` an event belongs to (``PUBLISH_BATCH``), for publish layers
Handle, Publish,  the callables the layers wrap: ``layer(next) -> callable`` of the same shape
InvokeHandle
HandlerLayer,     what ``mesh_handler_layers``/``mesh_delivery_layers``, ``mesh_publish_layers``
PublishLayer,     and ``mesh_invoke_layers`` return
InvokeLayer
================  ==============================================================================

This module imports only the event and the config, so a plugin (or any part of the mesh) can
import it without pulling in the App, the pipeline or a broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from mesh.config import SubscriptionConfig
from mesh.event import Event, ExtensionValue

if TYPE_CHECKING:
    from mesh.brokers.base import Delivery
    from mesh.runtime import Runtime

__all__ = [
    "Context",
    "Decision",
    "Handle",
    "HandlerLayer",
    "Invocation",
    "InvokeHandle",
    "InvokeLayer",
    "PUBLISH_BATCH",
    "Publish",
    "PublishBatch",
    "PublishLayer",
    "SubscriptionInfo",
]

Handle = Callable[["Context"], Awaitable[Any]]
HandlerLayer = Callable[[Handle], Handle]
"""``layer(next) -> handle``: wraps the call of a handler (see ``mesh_handler_layers``)."""
Publish = Callable[[str, Event], Awaitable[None]]
PublishLayer = Callable[[Publish], Publish]
"""``layer(next) -> publish``: wraps publishing (see ``mesh_publish_layers``)."""


class PublishBatch:
    """The ``publish_many`` the event a publish layer sees belongs to (read ``PUBLISH_BATCH``).

    ``state`` holds one value per plugin for the whole batch (the tracing plugin keeps its batch
    span there); :meth:`on_done` registers a callback run once every event of the batch was
    published or refused (to end that span).
    """

    __slots__ = ("_done", "size", "state", "topic")

    def __init__(self, topic: str, size: int) -> None:
        self.topic = topic
        self.size = size
        self.state: dict[str, Any] = {}
        self._done: list[Callable[[], None]] = []

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the whole batch was sent (errors in it are logged)."""
        self._done.append(callback)

    def finish(self) -> list[BaseException]:
        """Run the ``on_done`` callbacks (by the runtime); returns what they raised."""
        errors: list[BaseException] = []
        for callback in self._done:
            try:
                callback()
            except Exception as exc:
                errors.append(exc)
        self._done.clear()
        return errors


PUBLISH_BATCH: ContextVar[PublishBatch | None] = ContextVar("mesh_publish_batch", default=None)
"""Inside a publish layer: the ``publish_many`` the event belongs to (``None`` for a ``publish``)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a delivery whose handler failed."""

    action: Literal["retry", "dead_letter"]
    delay: float = 0.0
    reason: str = ""

    @classmethod
    def retry(cls, delay: float = 0.0) -> Decision:
        """Deliver again after ``delay`` seconds (through the broker, not a sleeping handler)."""
        return cls("retry", delay)

    @classmethod
    def dead_letter(cls, reason: str = "") -> Decision:
        """Send to the dead-letter destination now."""
        return cls("dead_letter", 0.0, reason)


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """What plugins see of a subscription: topic, group, handler name, its settings and filters."""

    topic: str
    group: str
    name: str
    config: SubscriptionConfig
    filters: Mapping[str, Any] = field(default_factory=dict)


class Context:
    """One delivery on its way through the pipeline; layers and hooks read and annotate it.

    ``attempt`` is the handler call number (1 for the first call), kept by the retry plugin;
    ``state`` is a dict plugins may use to pass values along one delivery; ``runtime`` is the
    app instance's :class:`~mesh.runtime.Runtime` (its id, config, hooks).
    """

    __slots__ = (
        "attempt",
        "delivery",
        "error",
        "event",
        "first_failure",
        "outcome",
        "runtime",
        "sender",
        "state",
        "subscription",
    )

    def __init__(
        self, runtime: Runtime, delivery: Delivery, event: Event | None, subscription: SubscriptionInfo
    ) -> None:
        self.runtime = runtime
        self.delivery = delivery
        self.event = event
        self.subscription = subscription
        self.attempt = delivery.attempt
        self.first_failure: datetime | None = None
        self.error: BaseException | None = None
        """The handler's exception, once it failed."""
        self.outcome = ""
        """How the delivery was settled: handled, skipped, retry, dead_letter, parked or returned."""
        self.state: dict[str, Any] = {}
        self.sender: str | None = None
        """The app id that signed the event, verified (``None`` when signing is off or it was unsigned)."""

    @property
    def topic(self) -> str:
        """The topic the delivery came from."""
        return self.subscription.topic

    @property
    def group(self) -> str:
        """The consumer group it was delivered to."""
        return self.subscription.group


class Invocation:
    """One call on its way through the invoke layers (see ``mesh_invoke_layers``).

    Layers may add extension attributes to :attr:`extensions` (every attempt's request carries
    them: the tracing plugin puts its ``traceparent`` there) and read :attr:`outcome` after the
    call: ``ok``, ``timeout``, ``no_responders``, ``failed`` (the request could not be sent) or
    the code of the remote error (``internal``, ``method_not_found``, ``permission_denied``, ...).
    """

    __slots__ = (
        "attempts",
        "data",
        "error",
        "extensions",
        "idempotent",
        "key",
        "method",
        "outcome",
        "request_id",
        "runtime",
        "target",
        "timeout",
    )

    def __init__(self, runtime: Runtime, target: str, method: str, data: Any, timeout: float, key: str | None) -> None:
        self.runtime = runtime
        self.target = target
        self.method = method
        self.data = data
        self.timeout = timeout
        self.key = key
        self.extensions: dict[str, ExtensionValue] = {}
        self.attempts = 0
        self.outcome = ""
        self.error: BaseException | None = None
        self.request_id: str | None = None
        """The id of the first attempt's request."""
        self.idempotent: bool | None = None
        """Whether the callee declares the method idempotent (``None``: unknown)."""


InvokeHandle = Callable[[Invocation], Awaitable[Any]]
InvokeLayer = Callable[[InvokeHandle], InvokeHandle]
"""``layer(next) -> invoke``: wraps one invocation (see ``mesh_invoke_layers``)."""
