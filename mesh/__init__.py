"""The event mesh: Dapr's building blocks as CloudEvents over the broker you already run.

>>> from mesh import App, Event
>>> App("orders").config.broker.type
'memory'
"""

from __future__ import annotations

from mesh.app import App
from mesh.dispatch import Context, Decision
from mesh.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerNotInstalled,
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
from mesh.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "App",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerNotInstalled",
    "ConfigError",
    "Context",
    "DeadLetter",
    "Decision",
    "DecodeError",
    "EncodeError",
    "Event",
    "EventError",
    "FeatureNotSupported",
    "InvalidEvent",
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
    "__version__",
    "hookimpl",
]
