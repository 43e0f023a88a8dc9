"""The mesh's vocabulary on the wire: every ``mesh*`` CloudEvents extension and reserved destination.

One table, so a name is defined once and the layers that write and read it (plugins, replay,
invocation, adapters) agree. Names the mesh writes match ``^[a-z][a-z0-9]{0,19}$``; where the
CloudEvents spec or a common extension already has a name for a meaning, that name is used.

==================  ==========================================================================
extension           meaning (written by)
==================  ==========================================================================
``partitionkey``    ordering key (CloudEvents partitioning extension; ``publish(key=...)``)
``expirytime``      a request's deadline (CloudEvents expirytime; invocation)
``correlationid``   the request a reply answers (invocation)
``meshreplyto``     where a request's reply goes (invocation)
``meshstatus``      a reply's outcome: ``ok`` or an error code (invocation)
``meshattempt``     delivery attempt of a delayed retry copy (retries through the broker)
``mesherrortype``   dead letter: the exception type
``mesherror``       dead letter: its message or the decision's reason
``meshtopic``       dead letter: the topic it failed on
``meshgroup``       dead letter: the consumer group that failed
``meshattempts``    dead letter: handler calls made
``meshfirstfail``   dead letter: first failure seen
``meshlastfail``    dead letter: last failure
``meshrawheaders``  dead letter of an undecodable message: its headers as JSON
``meshreplay``      the replay that sent this copy (replay)
``meshredrive``     the redrive that sent this copy (dead-letter redrive)
``meshstore``       a state change: the store's configured name (state outbox)
``meshetag``        a state change: the key's ETag after it (state outbox)
``meshjob``         a fired job: the job's name (jobs)
``meshjobtime``     a fired job: the time it was scheduled for, RFC 3339 (jobs)

``meshactortype``   an actor call: the actor type (actors)
``meshactorid``     an actor call: the actor id (actors)
``meshcallchain``   an actor call: the call chain it belongs to (actors; reentrancy)
``meshcalldepth``   an actor call: how many calls deep in its chain (actors; depth limit)
==================  ==========================================================================

Reserved destinations live under :data:`RESERVED_PREFIX`; user topics may not use it, so the
mesh's own traffic never clashes with them.

==============================  =============================================================
destination                     what travels there
==============================  =============================================================
``_mesh.invoke.<app>``          invocation requests to an app (its instances share them)
``_mesh.invoke.<app>.<inst>``   invocation requests (and probes) to one chosen instance of the app
``_mesh.reply.<instance>``      replies to one caller instance
``_mesh.presence``              heartbeats, leaves and probes of every instance
``_mesh.actor.<instance>``      actor calls to the instance that owns the actor
``_mesh.retry.<group>.<topic>`` delayed retry copies (Kafka)
``_mesh.delay.<ms>``            delay queues (RabbitMQ), delayed entries (Redis)
``_mesh.group``                 header or field naming the only group a copy is for (replay)
``_mesh.ephemeral``             the exchange of ephemeral destinations (RabbitMQ)
``_mesh.stream.<topic>``        the stream queue logging a readable topic (RabbitMQ, ``*.dlq``)
``_mesh.end``                   header of the end marker of a history read (RabbitMQ streams)

``_mesh.job.<app>``             fired jobs for the app's ``@app.job`` handlers (its group shares them)
``_mesh.reminder.<app>``        fired actor reminders of the app (its group shares them)
==============================  =============================================================
"""

from __future__ import annotations

__all__ = [
    "ACTOR_ID",
    "ACTOR_PREFIX",
    "ACTOR_TYPE",
    "ATTEMPT",
    "CALL_CHAIN",
    "CALL_DEPTH",
    "CORRELATION",
    "DEADLINE",
    "DEAD_LETTER_EXTENSIONS",
    "ERROR",
    "ERROR_TYPE",
    "FIRST_FAIL",
    "GROUP",
    "GROUP_MARK",
    "INVOKE_PREFIX",
    "JOB",
    "JOB_PREFIX",
    "JOB_TIME",
    "LAST_FAIL",
    "PARTITION_KEY",
    "PRESENCE_TOPIC",
    "RAW_HEADERS",
    "REDRIVE",
    "REPLAY",
    "REPLY_PREFIX",
    "REPLY_TO",
    "REMINDER_PREFIX",
    "RESERVED_PREFIX",
    "STATE_ETAG",
    "STATE_STORE",
    "STATUS",
    "TOPIC",
    "UNDECODABLE_TYPE",
    "ATTEMPTS",
    "CRYPT_CONTENT_TYPE",
    "DSSE_MATERIAL",
    "KEY_ID",
    "SIGNED_EXTENSIONS",
    "UNSIGNED_EXTENSIONS",
]

# -- extensions ------------------------------------------------------------------------------------

PARTITION_KEY = "partitionkey"
DEADLINE = "expirytime"
CORRELATION = "correlationid"
REPLY_TO = "meshreplyto"
STATUS = "meshstatus"
ATTEMPT = "meshattempt"

ERROR_TYPE = "mesherrortype"
ERROR = "mesherror"
TOPIC = "meshtopic"
GROUP = "meshgroup"
ATTEMPTS = "meshattempts"
FIRST_FAIL = "meshfirstfail"
LAST_FAIL = "meshlastfail"
RAW_HEADERS = "meshrawheaders"

DEAD_LETTER_EXTENSIONS: tuple[str, ...] = (ERROR_TYPE, ERROR, TOPIC, GROUP, ATTEMPTS, FIRST_FAIL, LAST_FAIL)
"""What the dead-letter step adds to a failed event; a redrive removes them (and ``meshrawheaders``)."""

UNDECODABLE_TYPE = "mesh.deadletter.undecodable"
"""The type of the dead letter made for a message that could not be decoded at all."""

REPLAY = "meshreplay"
REDRIVE = "meshredrive"

STATE_STORE = "meshstore"
STATE_ETAG = "meshetag"

DSSE_MATERIAL = "dssematerial"
SIGNED_EXTENSIONS = "signedextattrs"
KEY_ID = "meshkeyid"
CRYPT_CONTENT_TYPE = "cryptdatacontenttype"

UNSIGNED_EXTENSIONS: frozenset[str] = frozenset(
    {ATTEMPT, REPLAY, REDRIVE, RAW_HEADERS, "traceparent", "tracestate", *DEAD_LETTER_EXTENSIONS}
)
"""Extensions a signature never covers: each hop, retry, replay or dead-letter step rewrites them."""

JOB = "meshjob"
JOB_TIME = "meshjobtime"

ACTOR_TYPE = "meshactortype"
ACTOR_ID = "meshactorid"
CALL_CHAIN = "meshcallchain"
CALL_DEPTH = "meshcalldepth"

# -- reserved destinations -------------------------------------------------------------------------

RESERVED_PREFIX = "_mesh."
"""Names of the mesh's internal destinations start with this; user topics may not."""

INVOKE_PREFIX = RESERVED_PREFIX + "invoke."
REPLY_PREFIX = RESERVED_PREFIX + "reply."
PRESENCE_TOPIC = RESERVED_PREFIX + "presence"
JOB_PREFIX = RESERVED_PREFIX + "job."
REMINDER_PREFIX = RESERVED_PREFIX + "reminder."

ACTOR_PREFIX = RESERVED_PREFIX + "actor."
GROUP_MARK = RESERVED_PREFIX + "group"
"""Header (JetStream) or entry field (Redis) naming the only group a message is for."""
