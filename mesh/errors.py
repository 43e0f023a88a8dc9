"""Every error the mesh raises, in one tree.

::

    MeshError
    ├── ConfigError (ValueError)            bad config: every problem with its path in the file
    ├── PluginError                         a plugin failed inside a hook (names plugin and hook)
    ├── InvalidName (ValueError)            an app id, topic or group that would not work on every broker
    ├── InvalidHandler (TypeError)          a handler whose parameters the mesh cannot fill
    ├── ComponentNotInstalled (ImportError)  a component's client library is missing: names the extra
    ├── EventError (ValueError)
    │   ├── InvalidEvent                    an attribute breaks the CloudEvents rules
    │   ├── EncodeError (TypeError)         data cannot be serialised
    │   └── DecodeError                     bytes on the wire are not a readable event
    ├── BrokerError
    │   ├── BrokerNotInstalled (ComponentNotInstalled)  the client library is missing: names the extra
    │   ├── BrokerConnectionError (ConnectionError)  refused, unreachable, bad credentials
    │   ├── PublishError                    the broker did not take the event
    │   └── FeatureNotSupported (NotImplementedError)  names the broker (or store) and the alternative
    ├── HandlerSignal                       raised by handlers to steer delivery
    │   ├── Retry                           try again, optionally after ``delay`` seconds
    │   ├── DeadLetter                      give up now, with ``reason``
    │   └── BatchFailed                     a batch handler names the items that failed (the rest succeeded)
    ├── StateError (mesh.state.errors)      a state store call failed
    │   ├── ETagMismatch                    someone wrote the key first (optimistic concurrency)
    │   ├── InvalidKey (ValueError), InvalidValue (TypeError), InvalidQuery (ValueError)
    │   ├── StoreNotFound (KeyError)        no store of that name is configured
    │   └── StoreUnavailable (ConnectionError)
    ├── BindingError (mesh.bindings.base)   an input or output binding failed (names the binding)
    ├── CircuitOpen (mesh.resiliency)       a call or publish refused at once: the target's breaker is open
    └── InvocationError
        ├── InvocationTimeout (TimeoutError)
        ├── NoResponders                    no live instance of the app
        └── RemoteError                     the callee answered with an error (type, message, code)
            ├── MethodNotFound
            └── PermissionDenied

Backend errors are translated at the broker seam and keep their cause (``raise ... from exc``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BatchFailed",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerNotInstalled",
    "ComponentNotInstalled",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "EncodeError",
    "EventError",
    "FeatureNotSupported",
    "HandlerSignal",
    "InvalidEvent",
    "InvalidHandler",
    "InvalidName",
    "InvocationError",
    "InvocationTimeout",
    "MeshError",
    "MethodNotFound",
    "NoResponders",
    "PermissionDenied",
    "PluginError",
    "PublishError",
    "RemoteError",
    "Retry",
]


class MeshError(Exception):
    """Base of every error the mesh raises on purpose."""


class ConfigError(MeshError, ValueError):
    """The configuration is invalid; ``problems`` lists each one as ``(path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid configuration{where}:"]
        lines += [f"  {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class PluginError(MeshError):
    """A plugin raised inside a hook."""

    def __init__(self, plugin: str, hook: str, exc: BaseException) -> None:
        self.plugin = plugin
        self.hook = hook
        super().__init__(f"plugin {plugin!r} failed in hook {hook}: {type(exc).__name__}: {exc}")


class EventError(MeshError, ValueError):
    """An event cannot be built, encoded or decoded."""


class InvalidEvent(EventError):
    """An attribute or extension breaks the CloudEvents rules."""


class EncodeError(EventError, TypeError):
    """The event's data cannot be serialised."""


class DecodeError(EventError):
    """A message on the wire cannot be read as an event; ``raw`` keeps its bytes."""

    def __init__(self, reason: str, raw: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.reason = reason
        self.raw = raw
        self.headers = headers or {}
        super().__init__(reason)


class BrokerError(MeshError):
    """The broker failed or refused."""


class InvalidName(MeshError, ValueError):
    """An app id, topic or group name that would not work on every broker."""


class InvalidHandler(MeshError, TypeError):
    """A handler whose parameters the mesh cannot fill (reported when it is decorated)."""


class ComponentNotInstalled(MeshError, ImportError):
    """A component's client library is not installed: the message names the extra to install."""

    def __init__(self, kind: str, type: str, extra: str) -> None:
        self.kind = kind
        self.type = type
        self.extra = extra
        install = f"pip install 'event-mesh[{extra}]'" if extra else "install its package"
        super().__init__(f"the {type} {kind} needs its client library: {install}")


class BrokerNotInstalled(BrokerError, ComponentNotInstalled):
    """The broker's client library is not installed."""

    def __init__(self, broker: str, extra: str) -> None:
        self.broker = broker
        ComponentNotInstalled.__init__(self, "broker", broker, extra)


class BrokerConnectionError(BrokerError, ConnectionError):
    """The broker could not be reached, refused the connection or the credentials."""

    def __init__(self, broker: str, address: str, reason: str) -> None:
        self.broker = broker
        self.address = address
        super().__init__(f"cannot connect to {broker} at {address}: {reason}")


class PublishError(BrokerError):
    """The broker did not accept a published event."""


class FeatureNotSupported(BrokerError, NotImplementedError):
    """The broker (or state store: ``kind="state store"``) cannot do this; names the alternative."""

    def __init__(self, broker: str, feature: str, alternative: str = "", *, kind: str = "broker") -> None:
        self.broker = broker
        self.component = broker
        """The component's type name (``kafka``, ``nats-kv``)."""
        self.kind = kind
        """What the component is: ``broker`` (the default) or ``state store``."""
        self.feature = feature
        hint = f"; {alternative}" if alternative else ""
        super().__init__(f"the {broker} {kind} does not support {feature}{hint}")


class HandlerSignal(MeshError):
    """Raised by a handler to steer what happens to the delivery."""


class Retry(HandlerSignal):
    """Ask for another attempt, after ``delay`` seconds if given (else the policy's backoff)."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(reason if delay is None else f"{reason} (in {delay:g}s)")


class DeadLetter(HandlerSignal):
    """Send the event to the dead-letter destination now, with ``reason``."""

    def __init__(self, reason: str = "dead-lettered by handler") -> None:
        self.reason = reason
        super().__init__(reason)


class BatchFailed(HandlerSignal):
    """Raised by a batch handler: the items at these indexes failed, every other one succeeded.

    ``failed`` maps an index into the list the handler got to the item's error; each failed item
    is retried or dead-lettered on its own, as a single-event handler raising that error would be
    (so ``Retry(delay=...)`` and ``DeadLetter(reason=...)`` work per item). The rest are acked.
    """

    def __init__(self, failed: Mapping[int, BaseException]) -> None:
        self.failed: dict[int, BaseException] = dict(failed)
        shown = ", ".join(f"{i}: {type(e).__name__}" for i, e in sorted(self.failed.items())[:5])
        more = f" and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
        super().__init__(f"{len(self.failed)} item(s) of the batch failed ({shown}{more})")


class InvocationError(MeshError):
    """Service invocation failed."""


class InvocationTimeout(InvocationError, TimeoutError):
    """No reply arrived before the deadline."""


class NoResponders(InvocationError):
    """No live instance of the target app is known."""


class RemoteError(InvocationError):
    """The callee answered with an error."""

    def __init__(self, type: str, message: str, code: str = "internal", **details: Any) -> None:
        self.type = type
        self.message = message
        self.code = code
        self.details = details
        super().__init__(f"{type}: {message} [{code}]")


class MethodNotFound(RemoteError):
    """The callee has no such method."""


class PermissionDenied(RemoteError):
    """The callee's access policy refused the caller."""
