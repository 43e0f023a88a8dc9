"""Options of the built-in binding types (pure pydantic: importing this loads no client library).

Every model rejects unknown keys, so a misspelt option is reported at ``bindings.<name>.<key>``
with its line. Durations take seconds or ``'250ms'``, ``'2s'``, ``'5m'``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from mesh.components import ComponentOptions
from mesh.config.models import parse_duration
from mesh.names import name_problems

__all__ = [
    "CronOptions",
    "FilesInOptions",
    "FilesOutOptions",
    "HttpAuth",
    "HttpInOptions",
    "HttpOutOptions",
    "InputOptions",
    "MqttInOptions",
    "MqttOutOptions",
    "OutputOptions",
    "PostgresInOptions",
    "PostgresOutOptions",
    "SmtpOutOptions",
]


def _topic(value: str | None) -> str | None:
    if value is None:
        return None
    problems = name_problems(value)
    if problems:
        raise ValueError(f"topic {value!r} cannot be used on every broker: {'; '.join(problems)}")
    return value


def _duration(value: Any) -> float:
    return parse_duration(value)


class InputOptions(ComponentOptions):
    """Options every input binding has."""

    topic: str
    """The topic its events are published to."""
    event_type: str | None = Field(None, validation_alias=AliasChoices("event_type", "type_template"))
    """``type`` of wrapped items (``{subject}`` is replaced by the MQTT topic, channel or file name);
    default ``binding.<name>``. Also accepted as ``type_template``."""
    source: str | None = None
    """``source`` of the events it makes (default ``/<app id>/bindings/<name>``)."""
    publish_timeout: float = Field(10.0, gt=0)
    """Seconds to wait for the broker to confirm one event before the item counts as failed."""

    _topic_ok = field_validator("topic")(lambda v: _topic(v))
    _durations = field_validator("publish_timeout", mode="before")(lambda v: _duration(v))


class OutputOptions(ComponentOptions):
    """Options every output binding has."""

    from_topic: str | None = None
    """A topic whose events drive this binding (through the mesh's retries and dead letters)."""
    group: str | None = None
    """The group consuming ``from_topic`` (default ``<app id>.binding.<name>``)."""
    operation: str | None = None
    """The operation a ``from_topic`` event runs (default per type)."""

    _topic_ok = field_validator("from_topic")(lambda v: _topic(v))


# -- HTTP ------------------------------------------------------------------------------------------


class HttpAuth(ComponentOptions):
    """How webhook callers prove who they are: a bearer token, an HMAC-SHA256 signature, or both."""

    bearer: str | None = None
    """Expected ``Authorization: Bearer <token>``."""
    hmac_sha256: str | None = None
    """Secret of the HMAC-SHA256 of the raw body (GitHub's ``X-Hub-Signature-256: sha256=<hex>``)."""
    header: str = "X-Hub-Signature-256"
    """The header carrying the signature (hex, optionally prefixed ``sha256=``)."""


class HttpInOptions(InputOptions):
    """``http-in``: a webhook endpoint; answers 2xx only once the broker confirmed every event."""

    path: str
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    """Bindings on one host and port share one server (0: any free port)."""
    auth: HttpAuth | None = None
    max_body: int = Field(1024 * 1024, ge=1)
    """Largest body accepted, bytes (413 above)."""
    read_timeout: float = Field(10.0, gt=0)
    """Seconds a client gets to send its body (408 after)."""
    id_header: str | None = None
    """A header whose value is the event id of a plain JSON body (e.g. ``X-GitHub-Delivery``), so a
    retried delivery keeps its id and idempotent consumers see it once."""

    _read = field_validator("read_timeout", mode="before")(lambda v: _duration(v))

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("the path must start with '/'")
        return value


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class HttpOutOptions(OutputOptions):
    """``http-out``: requests to one URL, retried on 5xx and timeouts for idempotent methods only."""

    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "POST"
    cloudevents: Literal["binary", "structured", "none"] = "binary"
    """How ``from_topic`` events are sent: the CloudEvents HTTP binding's modes, or the data alone."""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0)
    """Extra attempts after a 5xx, a timeout or a refused connection (idempotent methods only)."""
    backoff: float = Field(0.2, ge=0)
    """Seconds before the first retry (doubled each time)."""

    _durations = field_validator("timeout", "backoff", mode="before")(lambda v: _duration(v))


# -- MQTT ------------------------------------------------------------------------------------------


def _mqtt_url(value: str) -> str:
    if not re.match(r"^mqtts?://", value):
        raise ValueError("the url must look like mqtt://host:1883")
    return value


class MqttInOptions(InputOptions):
    """``mqtt-in``: subscribe to a topic filter; each message becomes an event."""

    url: str = "mqtt://127.0.0.1:1883"
    filter: str
    """MQTT topic filter (``plant/+/temp``)."""
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None
    """A fixed client id keeps a persistent session (messages queued while away, at QoS 1+)."""

    _url = field_validator("url")(lambda v: _mqtt_url(v))


class MqttOutOptions(OutputOptions):
    """``mqtt-out``: publish to an MQTT topic (CloudEvents MQTT binding)."""

    url: str = "mqtt://127.0.0.1:1883"
    topic: str | None = None
    """MQTT topic (``metadata['topic']`` per call wins)."""
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    cloudevents: Literal["binary", "structured", "none"] = "binary"
    """MQTT 5 binary mode (attributes as user properties), structured JSON, or the data alone."""
    event_type: str | None = None
    """``type`` of the event made around data from a direct call (default ``binding.<name>``)."""

    _url = field_validator("url")(lambda v: _mqtt_url(v))


# -- PostgreSQL ------------------------------------------------------------------------------------


class PostgresInOptions(InputOptions):
    """``postgres-in``: LISTEN on a channel; each NOTIFY becomes an event."""

    url: str
    channel: str

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
            raise ValueError("a channel is an SQL identifier: letters, digits and '_', at most 63")
        return value


class PostgresOutOptions(OutputOptions):
    """``postgres-out``: ``exec`` and ``query`` on a pool."""

    url: str
    sql: str | None = None
    """The statement ``from_topic`` events run (their data are its parameters); unset: the event
    data must be ``{sql, params}``."""
    pool_size: int = Field(4, ge=1)


# -- files, SMTP, cron -----------------------------------------------------------------------------


class FilesInOptions(InputOptions):
    """``files-in``: watch a folder; a file is moved aside only after its event was confirmed."""

    path: str
    pattern: str = "*"
    poll: float = Field(1.0, gt=0)
    """Seconds between scans."""
    processed: str = "processed"
    """Sub-folder files go to once their event is confirmed."""
    failed: str = "failed"
    """Sub-folder for files that cannot be read (with ``<name>.reason``)."""

    _poll = field_validator("poll", mode="before")(lambda v: _duration(v))


class FilesOutOptions(OutputOptions):
    """``files-out``: create, get, delete and list files in a folder."""

    path: str


class SmtpOutOptions(OutputOptions):
    """``smtp-out``: send mail."""

    model_config = ConfigDict(populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field(validation_alias=AliasChoices("from", "sender"))
    """The ``From:`` address (``from:`` in the config)."""
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_tls: bool = False
    timeout: float = Field(30.0, gt=0)

    _durations = field_validator("timeout", mode="before")(lambda v: _duration(v))


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
_CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


class CronOptions(InputOptions):
    """``cron``: publish an event on a schedule (needs the jobs block)."""

    schedule: str
    """Five-field cron (``0 2 * * *``), a macro (``@daily``) or ``@every 5m``."""
    timezone: str = "UTC"
    data: Any = None
    """The data of every event."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        text = value.strip()
        if text in _CRON_MACROS:
            return text
        if text.startswith("@every "):
            parse_duration(text.removeprefix("@every ").strip())
            return text
        fields = text.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError("a schedule is five cron fields (minute hour day month weekday), a macro or '@every 5m'")
        return text

    @model_validator(mode="after")
    def _zone(self) -> CronOptions:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self
