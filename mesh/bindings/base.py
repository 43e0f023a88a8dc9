"""The binding contract: input bindings emit CloudEvents, output bindings run operations.

=================  ==========================================================================
part               what
=================  ==========================================================================
:class:`Binding`   one configured binding: name, validated options, the app's runtime, counts
:class:`InputBinding`   ``start()`` / ``stop()``; emits each outside item as a CloudEvent with
                   :meth:`InputBinding.emit`, which returns only once the broker confirmed it
:class:`OutputBinding`  ``invoke(operation, data, metadata)`` returns a result; with
                   ``from_topic`` the block feeds it the topic's events (:meth:`handle_event`)
:class:`BindingFeatures`  direction, operations and the delivery guarantee, as data
:class:`BindingStats`     counts per binding (also OpenTelemetry counter ``mesh.binding.items``)
=================  ==========================================================================

A binding class is built as ``cls(name, options, runtime)`` where ``options`` is the instance
of the options model its registry entry names; constructors do no I/O. Every input and every
output operation runs in a span (:func:`span`): kind SERVER or CONSUMER for inputs, CLIENT or
PRODUCER for outputs; an incoming W3C ``traceparent`` is the parent of an input's span.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from mesh.components import ComponentOptions
from mesh.errors import MeshError
from mesh.event import Event, ExtensionValue

if TYPE_CHECKING:
    from mesh.http import HttpServer
    from mesh.runtime import Runtime

__all__ = [
    "Binding",
    "BindingError",
    "BindingFeatures",
    "BindingStats",
    "InputBinding",
    "OutputBinding",
    "json_by_default",
    "span",
]

OptionsT = TypeVar("OptionsT", bound=ComponentOptions)

_meter = metrics.get_meter("mesh.bindings")
_items = _meter.create_counter("mesh.binding.items", description="Items in and out of the mesh per binding")
_tracer = trace.get_tracer("mesh.bindings")


class BindingError(MeshError):
    """A binding could not do what was asked (bad operation, outside system refused or unreachable)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingFeatures:
    """What a binding type offers, as data (listed by ``mesh bindings list`` and the docs)."""

    direction: Literal["input", "output"]
    """``input``: outside items become events; ``output``: operations on an outside system."""
    operations: frozenset[str] = frozenset()
    """The operations an output binding's :meth:`OutputBinding.invoke` accepts."""
    delivery: str = ""
    """The guarantee in one line (when a 2xx or a move aside means the event is safe)."""


@dataclass
class BindingStats:
    """Counts of one binding, kept in process (``received`` ... ``errors``)."""

    received: int = 0
    """Inputs: items read from the outside system."""
    emitted: int = 0
    """Inputs: events the broker confirmed."""
    wrapped: int = 0
    """Inputs: items that were no CloudEvent and were wrapped in one."""
    rejected: int = 0
    """Inputs: items refused as bad input (answered 4xx, moved to ``failed/``)."""
    failed: int = 0
    """Inputs: publishes the broker did not confirm (answered 503, tried again later)."""
    invoked: int = 0
    """Outputs: operations that succeeded."""
    errors: int = 0
    """Outputs: operations that failed."""
    _attributes: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` items with ``outcome`` (one of the fields) here and on the OTel counter."""
        setattr(self, outcome, getattr(self, outcome) + n)
        _items.add(n, {**self._attributes, "outcome": outcome})

    def as_dict(self) -> dict[str, int]:
        """The counts by name."""
        names = ("received", "emitted", "wrapped", "rejected", "failed", "invoked", "errors")
        return {k: getattr(self, k) for k in names}


def json_by_default(event: Event) -> Event:
    """A structured event without ``datacontenttype`` has JSON data (the JSON format's rule): say so,
    so a binary-mode broker does not hand the data on as bytes."""
    if event.datacontenttype is None and event.data is not None and not isinstance(event.data, bytes):
        return event.replace(datacontenttype="application/json")
    return event


@contextmanager
def span(
    name: str, kind: SpanKind, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None = None
) -> Iterator[Span]:
    """A span around one input or output; ``carrier`` (headers) gives its parent when it has a ``traceparent``.

    Without an OpenTelemetry SDK the span is a no-op, yet a parent read from ``carrier`` is made
    current, so the tracing plugin forwards it on the event the input publishes.
    """
    parent = propagate.extract(carrier) if carrier and "traceparent" in carrier else None
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=dict(attributes)) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


class Binding(ABC, Generic[OptionsT]):
    """One configured binding of an app (see the module docstring)."""

    features: ClassVar[BindingFeatures]
    type: ClassVar[str] = ""
    """The registry type name (``http-in``...), set on each built-in class."""

    def __init__(self, name: str, options: OptionsT, runtime: Runtime) -> None:
        self.name = name
        self.options = options
        self.runtime = runtime
        self.stats = BindingStats(_attributes={"mesh.binding.name": name, "mesh.binding.type": self.type})
        self.state = "stopped"
        """``stopped``, ``running``, or what went wrong (``reconnecting: ...``)."""

    @property
    def direction(self) -> str:
        """``input`` or ``output``."""
        return self.features.direction

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.state})"


class InputBinding(Binding[OptionsT]):
    """A binding that turns outside items into CloudEvents on its ``topic``."""

    @property
    def topic(self) -> str:
        """The topic this binding publishes to."""
        topic: str = getattr(self.options, "topic")  # noqa: B009 - every input options model has it
        return topic

    @property
    def source(self) -> str:
        """The ``source`` of the events it makes (``/<app id>/bindings/<name>`` unless configured)."""
        configured: str | None = getattr(self.options, "source", None)
        return configured or f"{self.runtime.source}/bindings/{self.name}"

    def event_type(self, subject: str | None = None) -> str:
        """The ``type`` of wrapped items: ``event_type`` with ``{subject}`` filled in, else ``binding.<name>``."""
        template: str | None = getattr(self.options, "event_type", None)
        if not template:
            return f"binding.{self.name}"
        return template.replace("{subject}", subject or "") if "{subject}" in template else template

    def wrap(
        self,
        data: Any,
        *,
        subject: str | None = None,
        id: str | None = None,
        datacontenttype: str | None = None,
        extensions: dict[str, ExtensionValue] | None = None,
    ) -> Event:
        """A CloudEvent of this binding's type and source around an item that is not one."""
        return Event(
            self.event_type(subject),
            self.source,
            data,
            id=id,
            subject=subject,
            datacontenttype=datacontenttype,
            extensions=extensions,
        )

    async def emit(self, event: Event) -> Event:
        """Publish ``event`` on the binding's topic through the app's publish path; returns once confirmed.

        Raises what the publish raised (or :class:`TimeoutError` after ``publish_timeout``), counted
        as ``failed``: the caller answers 503 or tries again, it never drops the item.
        """
        timeout: float = getattr(self.options, "publish_timeout", 10.0)
        try:
            async with asyncio.timeout(timeout):
                sent = await self.runtime.send(self.topic, event)
        except Exception:
            self.stats.add("failed")
            raise
        self.stats.add("emitted")
        return sent

    def http_endpoint(self) -> tuple[str, int] | None:
        """The (host, port) whose shared HTTP server this binding serves on, if it takes HTTP."""
        return None

    def add_routes(self, server: HttpServer) -> None:
        """Add this binding's routes to the shared server of :meth:`http_endpoint` (before start)."""

    @abstractmethod
    async def start(self) -> None:
        """Begin taking items from outside (returns once ready)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop taking items; items in hand finish or are left for the next start."""


class OutputBinding(Binding[OptionsT]):
    """A binding that acts on an outside system: :meth:`invoke` an operation with data and metadata."""

    default_operation: ClassVar[str] = ""
    """The operation ``from_topic`` events run unless ``operation`` is configured."""
    span_kind: ClassVar[SpanKind] = SpanKind.CLIENT

    @property
    def from_topic(self) -> str | None:
        """The topic whose events drive this binding, if any."""
        return getattr(self.options, "from_topic", None)

    async def start(self) -> None:
        """Connect ahead of the first operation (default: connect lazily)."""

    async def close(self) -> None:
        """Release connections."""

    async def invoke(self, operation: str, data: Any = None, metadata: Mapping[str, Any] | None = None) -> Any:
        """Run ``operation`` with ``data`` and ``metadata``; returns its result, raises :class:`BindingError`."""
        if operation not in self.features.operations:
            known = ", ".join(sorted(self.features.operations))
            self.stats.add("errors")
            raise BindingError(f"binding {self.name!r} ({self.type}) has no operation {operation!r} (one of: {known})")
        attributes = {"mesh.binding.name": self.name, "mesh.binding.operation": operation}
        with span(f"{operation} {self.name}", self.span_kind, attributes):
            try:
                result = await self.call(operation, data, dict(metadata or {}))
            except Exception:
                self.stats.add("errors")
                raise
        self.stats.add("invoked")
        return result

    @abstractmethod
    async def call(self, operation: str, data: Any, metadata: dict[str, Any]) -> Any:
        """Do one operation (``operation`` is one of ``features.operations``)."""

    async def handle_event(self, event: Event) -> None:
        """Act on one event of ``from_topic`` (default: the configured operation with the event's data).

        Raising lets the mesh retry and dead-letter the event as for any handler.
        """
        operation = getattr(self.options, "operation", None) or self.default_operation
        await self.invoke(operation, event.data, {"event": event})
