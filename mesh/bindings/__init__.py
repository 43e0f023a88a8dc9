"""Bindings: outside systems in and out of the mesh as CloudEvents, without client code.

Every input becomes a CloudEvent on a topic (so retries, dead letters, tracing, archive and
replay apply to it); every output binding runs operations on a direct call
(``await app.binding("ledger").invoke("exec", {...})``) and, with ``from_topic``, for each event
of a topic through the ordinary delivery pipeline. The built-ins are registered exactly as a
plugin's would be (``registry.add(ComponentInfo(kind="binding", ...))``).

==============  =========  ======================================  ==========================
type            direction  operations                              extra
==============  =========  ======================================  ==========================
``http-in``     input      (webhook: binary, structured, batch,    ``http`` (aiohttp)
                           plain JSON)
``http-out``    output     create get head post put patch delete   ``http``
                           options
``mqtt-in``     input      (subscribe to a filter)                 ``mqtt`` (aiomqtt)
``mqtt-out``    output     publish create                          ``mqtt``
``postgres-in``  input     (LISTEN/NOTIFY)                         ``postgres`` (asyncpg)
``postgres-out``  output   exec query                              ``postgres``
``files-in``    input      (watch a folder)                        none
``files-out``   output     create get delete list                  none
``smtp-out``    output     send create                             ``smtp`` (aiosmtplib)
``cron``        input      (schedule; needs the jobs block)        none
==============  =========  ======================================  ==========================

Guarantees per binding are in ``docs/bindings.md``. Nothing here imports a client library.
"""

from __future__ import annotations

from mesh.bindings.base import (
    Binding,
    BindingError,
    BindingFeatures,
    BindingStats,
    InputBinding,
    OutputBinding,
    span,
)
from mesh.bindings.block import BindingsBlock
from mesh.components import ComponentInfo

__all__ = [
    "BUILTIN_BINDINGS",
    "Binding",
    "BindingError",
    "BindingFeatures",
    "BindingStats",
    "BindingsBlock",
    "InputBinding",
    "OutputBinding",
    "span",
]

_O = "mesh.bindings.options:"


def _info(type: str, target: str, options: str, extra: str, client: str | None, summary: str) -> ComponentInfo:
    return ComponentInfo(
        kind="binding",
        type=type,
        target=f"mesh.bindings.{target}",
        options=_O + options,
        extra=extra,
        client=client,
        summary=summary,
    )


BUILTIN_BINDINGS: tuple[ComponentInfo, ...] = (
    _info("http-in", "http:HttpIn", "HttpInOptions", "http", "aiohttp", "webhooks in as CloudEvents"),
    _info("http-out", "http:HttpOut", "HttpOutOptions", "http", "aiohttp", "HTTP requests out"),
    _info("mqtt-in", "mqtt:MqttIn", "MqttInOptions", "mqtt", "aiomqtt", "MQTT subscribe"),
    _info("mqtt-out", "mqtt:MqttOut", "MqttOutOptions", "mqtt", "aiomqtt", "MQTT publish"),
    _info("postgres-in", "postgres:PostgresIn", "PostgresInOptions", "postgres", "asyncpg", "LISTEN/NOTIFY"),
    _info("postgres-out", "postgres:PostgresOut", "PostgresOutOptions", "postgres", "asyncpg", "exec and query"),
    _info("files-in", "files:FilesIn", "FilesInOptions", "", None, "files dropped in a folder"),
    _info("files-out", "files:FilesOut", "FilesOutOptions", "", None, "files written to a folder"),
    _info("smtp-out", "smtp:SmtpOut", "SmtpOutOptions", "smtp", "aiosmtplib", "mail out"),
    _info("cron", "cron:Cron", "CronOptions", "", None, "events on a schedule (the jobs block)"),
)
"""The built-in binding types (listed in :data:`mesh.components.BUILTIN_LISTS`)."""
