"""Built-in dead-letter plugin: where failed events go and what they carry.

The dead-letter event is the original (same id, same data) plus extensions saying why:

=================  =================================================
``mesherrortype``  the exception type (``TimeoutError``)
``mesherror``      its message (or the decision's reason)
``meshtopic``      the topic it failed on
``meshgroup``      the consumer group that failed
``meshattempts``   handler calls made
``meshfirstfail``  time of the first failure seen by this process
``meshlastfail``   time of the last failure
=================  =================================================

The destination is ``subscriptions.<topic>.dead_letter`` (or ``defaults.dead_letter``), else
``<topic>.dlq``. A message that could not be decoded at all is dead-lettered as an event of type
``mesh.deadletter.undecodable`` whose data is the raw bytes and whose ``meshrawheaders`` holds
the original headers as JSON.
"""

from __future__ import annotations

import json

from mesh import extensions as ext
from mesh.codecs.data import shown_headers
from mesh.errors import DeadLetter, DecodeError
from mesh.event import Event, now
from mesh.hooks import hookimpl
from mesh.types import Context

name = "deadletter"

UNDECODABLE_TYPE = ext.UNDECODABLE_TYPE
FAILURE_EXTENSIONS = ext.DEAD_LETTER_EXTENSIONS
"""The extensions this plugin adds (named in :mod:`mesh.extensions`); redrive removes them."""


@hookimpl(trylast=True)
def mesh_dead_letter_target(context: Context) -> str:
    return context.subscription.config.dead_letter or f"{context.topic}.dlq"


@hookimpl(trylast=True)
def mesh_dead_letter_event(context: Context, error: BaseException | None) -> Event:
    failed_at = now()
    if isinstance(error, DeadLetter):
        message = error.reason
        cause = error.__cause__
        error_type = type(cause).__name__ if cause is not None else "DeadLetter"
    else:
        message = str(error) if error is not None else "unknown"
        error_type = type(error).__name__ if error is not None else "Unknown"
    event = context.event
    if event is None:
        raw = context.delivery.raw
        headers = shown_headers(error.headers) if isinstance(error, DecodeError) else {}
        if raw is not None and not headers:
            headers = shown_headers(raw.headers)
        if raw is not None and raw.content_type:
            headers.setdefault("content-type", shown_headers({"c": raw.content_type}).get("c", ""))
        body = raw.body if raw is not None else (error.raw if isinstance(error, DecodeError) else b"")
        return Event(
            UNDECODABLE_TYPE,
            f"/{context.runtime.id}",
            bytes(body),
            extensions={
                "mesherrortype": error_type,
                "mesherror": message[:1000],
                "meshtopic": context.topic,
                "meshgroup": context.group,
                "meshattempts": context.delivery.attempt,
                "meshfirstfail": failed_at,
                "meshlastfail": failed_at,
                "meshrawheaders": json.dumps(headers, sort_keys=True),
            },
        )
    return event.with_extensions(
        mesherrortype=error_type,
        mesherror=message[:1000],
        meshtopic=context.topic,
        meshgroup=context.group,
        meshattempts=context.attempt,
        meshfirstfail=context.first_failure or failed_at,
        meshlastfail=failed_at,
    )
