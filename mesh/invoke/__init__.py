"""Service invocation: request/reply over publish/subscribe, on every broker (see docs/invocation.md).

:mod:`mesh.invoke.protocol` defines the two CloudEvents (request and reply),
:mod:`mesh.invoke.callee` serves an app's methods and :mod:`mesh.invoke.caller` makes calls;
:mod:`mesh.invoke.presence` tells who is live. The App's ``@app.method`` and ``app.invoke`` are the
entry points; see ``docs/invocation.md``.
"""

from __future__ import annotations

from mesh.invoke.callee import Callee, MethodSpec
from mesh.invoke.caller import Caller
from mesh.invoke.protocol import REPLY_TYPE, REQUEST_TYPE, invoke_topic, reply_topic
from mesh.types import Invocation, InvokeHandle, InvokeLayer

__all__ = [
    "REPLY_TYPE",
    "REQUEST_TYPE",
    "Callee",
    "Caller",
    "Invocation",
    "InvokeHandle",
    "InvokeLayer",
    "MethodSpec",
    "invoke_topic",
    "reply_topic",
]
