"""The event mesh: Dapr's building blocks as CloudEvents over the broker you already run.

>>> from mesh import App, Event
>>> App("orders").config.broker.type
'memory'
"""

from __future__ import annotations

from mesh.actors import Actor
from mesh.app import App
from mesh.batch import BatchPolicy, FailedEntry, PublishResult
from mesh.errors import (
    BatchFailed,
    BrokerConnectionError,
    BrokerError,
    BrokerNotInstalled,
    ComponentNotInstalled,
    ConfigError,
    DeadLetter,
    DecodeError,
    EncodeError,
    EventError,
    FeatureNotSupported,
    InvalidEvent,
    InvocationError,
    InvocationTimeout,
    MeshError,
    MethodNotFound,
    NoResponders,
    PermissionDenied,
    PluginError,
    PublishError,
    RemoteError,
    Retry,
)
from mesh.event import Event
from mesh.hooks import hookimpl
from mesh.runtime import Runtime
from mesh.types import Context, Decision, Invocation, SubscriptionInfo

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "App",
    "BatchFailed",
    "BatchPolicy",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerNotInstalled",
    "ComponentNotInstalled",
    "ConfigError",
    "Context",
    "DeadLetter",
    "Decision",
    "DecodeError",
    "EncodeError",
    "Event",
    "EventError",
    "FailedEntry",
    "FeatureNotSupported",
    "InvalidEvent",
    "Invocation",
    "InvocationError",
    "InvocationTimeout",
    "MeshError",
    "MethodNotFound",
    "NoResponders",
    "PermissionDenied",
    "PluginError",
    "PublishError",
    "PublishResult",
    "RemoteError",
    "Retry",
    "Runtime",
    "SubscriptionInfo",
    "__version__",
    "hookimpl",
]
