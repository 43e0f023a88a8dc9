"""The validated shape of ``mesh.yaml``: frozen pydantic models (the JSON Schema is made from these)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mesh.actors.config import ActorsConfig
from mesh.brokers.tls import AuthOptions, TlsOptions
from mesh.components import Registry
from mesh.jobs.config import JobsConfig
from mesh.resiliency.config import ResiliencyConfig

__all__ = [
    "BrokerConfig",
    "ComponentConfig",
    "InvokeConfig",
    "MeshConfig",
    "PluginsConfig",
    "PresenceConfig",
    "RetryPolicy",
    "SecretStoreConfig",
    "SecurityConfig",
    "SubscriptionConfig",
    "parse_duration",
]

_DEFAULT_REGISTRY: Registry | None = None


def registry_of(info: ValidationInfo) -> Registry:
    """The component registry validation runs against: the App's (in the context), else the built-ins."""
    global _DEFAULT_REGISTRY
    context = info.context
    if isinstance(context, dict) and isinstance(context.get("registry"), Registry):
        return context["registry"]  # type: ignore[no-any-return]
    if _DEFAULT_REGISTRY is None:
        _DEFAULT_REGISTRY = Registry()
    return _DEFAULT_REGISTRY


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``250ms``, ``2s``, ``5m``, ``1h``, ``7d``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '250ms', '2s', '5m', '1h', '7d')")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Frozen):
    """Which broker to use and how to reach it; swapping brokers changes only this section."""

    type: str = "memory"
    """A broker type of the registry: memory, kafka, rabbitmq, nats, jetstream, redis, or a plugin's."""
    url: str | None = None
    content_mode: Literal["binary", "structured"] = "binary"
    namespace: str = ""
    """Prefix for every name the mesh creates on the broker."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Broker-specific settings, validated by the broker type's options model."""
    tls: TlsOptions | None = None
    """TLS to the broker: CA, client certificate and key, hostname check, minimum version
    (docs/security.md, per broker)."""
    auth: AuthOptions | None = None
    """Credentials: username/password, SASL mechanism, NATS token/NKey/creds (docs/security.md)."""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str, info: ValidationInfo) -> str:
        known = registry_of(info).types("broker")
        if value not in known:
            raise ValueError(f"unknown broker type {value!r} (one of: {', '.join(known)})")
        return value

    @model_validator(mode="after")
    def _check_options(self, info: ValidationInfo) -> BrokerConfig:
        model = registry_of(info).options_model("broker", self.type, path="broker.type")
        if model is not None:
            validated = model.model_validate(self.options)
            object.__setattr__(self, "options", validated.model_dump(exclude_unset=True))
        return self


class RetryPolicy(_Frozen):
    """How often and how soon a failing handler is tried again, before dead-lettering."""

    attempts: int = Field(3, ge=1)
    """Handler calls in all, the first included."""
    immediate: int = Field(1, ge=0)
    """How many of the retries run at once in process (short, capped backoff) before delayed ones."""
    backoff: Literal["constant", "exponential"] = "exponential"
    initial: float = 0.5
    """First delay, seconds (or '250ms', '2s')."""
    max: float = 60.0
    """Longest delay."""
    jitter: bool = True
    immediate_max: float = 0.2
    """Cap on an in-process backoff, so a partition does not stall."""
    never: tuple[str, ...] = ()
    """Exception type names (``ValueError`` or ``pkg.mod.Error``) that are never retried."""

    _durations = field_validator("initial", "max", "immediate_max", mode="before")(lambda v: parse_duration(v))


class SubscriptionConfig(_Frozen):
    """Settings of the subscriptions to one topic (``subscriptions.<topic>``) or of all (``defaults``)."""

    concurrency: int | None = Field(None, ge=1)
    retry: RetryPolicy | None = None
    dead_letter: str | None = None
    """Destination topic for events that fail for good (default ``<topic>.dlq``)."""
    idempotent: bool | None = None
    """Drop redeliveries of an event already handled (needs the idempotency plugin)."""


class PluginsConfig(_Frozen):
    """Which plugins run and their settings."""

    disable: tuple[str, ...] = ()
    """Plugin names not to load (also ``MESH_DISABLE_PLUGINS=a,b``)."""
    config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings per plugin name, validated by the plugin itself."""


class InvokeConfig(_Frozen):
    """Service invocation (``invoke:``): access control and how methods are served and called."""

    allow: dict[str, tuple[str, ...]] | None = None
    """Which caller app ids may call which method of this app: ``{reserve: [orders], "*": [admin]}``.
    A method's own entry wins over ``"*"``; ``"*"`` in a list allows every caller. Unset: every
    caller may call every method. The caller id is the request's ``source``: it is not
    authentication until events are signed."""
    timeout: float = Field(10.0, gt=0)
    """Default seconds ``app.invoke`` waits for a reply (``'500ms'``, ``'2s'`` also work)."""
    concurrency: int = Field(32, ge=1)
    """Requests one instance handles at once."""
    retries: int = Field(2, ge=0)
    """Extra attempts of an idempotent method when an instance of the callee vanished (its
    presence expired) while the call was pending, within the call's timeout."""
    include_traceback: bool = False
    """Send the handler's traceback in error replies (for development: it shows code to callers)."""

    _durations = field_validator("timeout", mode="before")(lambda v: parse_duration(v))


class PresenceConfig(_Frozen):
    """Presence (``presence:``): heartbeats on ``_mesh.presence`` for discovery and ``mesh apps``."""

    enabled: bool = True
    """Announce this app and watch others; off: no fail-fast ``NoResponders`` (except on NATS)."""
    interval: float = Field(2.0, gt=0)
    """Seconds between heartbeats."""
    expiry: float = Field(6.0, gt=0)
    """An instance not heard of for this long is gone (say 3 intervals)."""
    warmup: float = Field(1.0, ge=0)
    """After an app starts watching, how long an invocation waits for a target to show up
    before it fails with ``NoResponders`` (running instances answer a probe at once)."""

    _durations = field_validator("interval", "expiry", "warmup", mode="before")(lambda v: parse_duration(v))

    @model_validator(mode="after")
    def _expiry_after_interval(self) -> PresenceConfig:
        if self.expiry <= self.interval:
            raise ValueError("presence.expiry must be longer than presence.interval")
        return self


class SigningConfig(_Frozen):
    """This app's signing key (``security.signing``): Ed25519 (or ECDSA P-256), PEM or base64."""

    key: SecretStr
    """The private key: a PEM block or the base64 of the 32-byte Ed25519 seed; use a ``secretKeyRef``."""
    key_id: str = Field(min_length=1)
    """The ``keyid`` written into every signature (name it after the app and the period: ``billing-2026-12``)."""


class TrustConfig(_Frozen):
    """Whose signatures this app accepts (``security.trust``)."""

    keys: dict[str, str] = Field(default_factory=dict)
    """Public keys by key id: PEM, or ``ed25519:<base64>`` / plain base64 of the 32-byte key."""
    apps: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Which key ids belong to which app id; several per app while keys rotate."""


class ScopesConfig(_Frozen):
    """Topic scopes on the verified signer (Dapr's ``publishingScopes``/``subscriptionScopes``).

    Per app id, the topics (globs) it may publish to or subscribe to; an app not listed is not
    restricted. Reserved ``_mesh.*`` destinations are never scoped.
    """

    publish: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    subscribe: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class EncryptionConfig(_Frozen):
    """Payload encryption per topic (``security.encryption``): AES-GCM, the key id in ``meshkeyid``."""

    keys: dict[str, SecretStr] = Field(default_factory=dict)
    """AES keys (base64 of 16, 24 or 32 bytes) by key id; keep old ones to read old events."""
    topics: dict[str, str] = Field(default_factory=dict)
    """Topic glob -> the key id new events on it are sealed with."""

    @model_validator(mode="after")
    def _known_keys(self) -> EncryptionConfig:
        for topic, key_id in self.topics.items():
            if key_id not in self.keys:
                raise ValueError(f"encryption.topics.{topic}: key id {key_id!r} is not in encryption.keys")
        return self


class SecurityConfig(_Frozen):
    """Signed events, verified identity, topic scopes, payload encryption (``security:``)."""

    signing: SigningConfig | None = None
    trust: TrustConfig = Field(default_factory=TrustConfig)
    require_signed: bool = False
    """Dead-letter unsigned events (forged or tampered ones are dead-lettered whenever checking is on)."""
    scopes: ScopesConfig = Field(default_factory=ScopesConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)

    @model_validator(mode="after")
    def _known_key_ids(self) -> SecurityConfig:
        for app, ids in self.trust.apps.items():
            for key_id in ids:
                if key_id not in self.trust.keys:
                    raise ValueError(f"trust.apps.{app}: key id {key_id!r} is not in trust.keys")
        return self

    @property
    def checking(self) -> bool:
        """Whether deliveries are verified (a signing key, trusted keys, or signed events required)."""
        return self.signing is not None or bool(self.trust.keys) or self.require_signed


class SecretStoreConfig(BaseModel):
    """One secret store (``secrets.<name>``): its ``type`` (default: the name), access lists, settings.

    ``secrets: {file: {path: /run/secrets}}`` keeps working: the name is the type.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str | None = None
    """``env``, ``file``, ``dotenv`` or a plugin's store; unset: the store's name."""
    allowed: tuple[str, ...] | None = None
    """Only these secret names may be read from the store (unset: all)."""
    denied: tuple[str, ...] = ()
    """These secret names may never be read (wins over ``allowed``)."""

    @property
    def settings(self) -> dict[str, Any]:
        """The store's own settings (``path``, ``prefix``, ...)."""
        return dict(self.model_extra or {})


class ComponentConfig(BaseModel):
    """One named component of a block (``state.<name>``, ``bindings.<name>``): its ``type`` and options.

    The options sit beside ``type`` and are validated by the registered type's options model
    (built-in or from a plugin), so a misspelt option is reported at its path in the file.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str

    @property
    def options(self) -> dict[str, Any]:
        """Everything but ``type``, as validated by the type's options model."""
        return dict(self.model_extra or {})


def component_problems(
    kind: str, section: str, value: dict[str, ComponentConfig], registry: Registry
) -> tuple[dict[str, ComponentConfig], list[tuple[str, str]]]:
    """The components of one section with their options validated by their type's model, and
    the problems found, each with its path (``state.carts.url``)."""
    known = registry.types(kind)
    out: dict[str, ComponentConfig] = {}
    problems: list[tuple[str, str]] = []
    for name, component in value.items():
        if component.type not in known:
            shown = ", ".join(known) or "none registered"
            problems.append((f"{section}.{name}.type", f"unknown {kind} type {component.type!r} (one of: {shown})"))
            continue
        model = registry.options_model(kind, component.type)
        options = component.options
        if model is not None:
            try:
                options = model.model_validate(options).model_dump(exclude_unset=True)
            except ValidationError as exc:
                for e in exc.errors():
                    where = ".".join([section, name, *(str(p) for p in e["loc"])])
                    problems.append((where, "unknown key" if e["type"] == "extra_forbidden" else e["msg"]))
                continue
        out[name] = ComponentConfig.model_validate({"type": component.type, **options})
    return out, problems


class MeshConfig(_Frozen):
    """The whole ``mesh.yaml``."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    defaults: SubscriptionConfig = Field(default_factory=lambda: SubscriptionConfig())
    subscriptions: dict[str, SubscriptionConfig] = Field(default_factory=dict)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    invoke: InvokeConfig = Field(default_factory=lambda: InvokeConfig())
    presence: PresenceConfig = Field(default_factory=lambda: PresenceConfig())
    secrets: dict[str, SecretStoreConfig] = Field(default_factory=dict)
    """Secret stores by name: ``{vault: {type: file, path: /run/secrets, allowed: [db-password]}}``."""
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    """Signed events, trusted keys, topic scopes and payload encryption."""
    state: dict[str, ComponentConfig] = Field(default_factory=dict)
    """State stores by name: ``{carts: {type: postgres, url: ...}}`` (types from the registry)."""
    jobs: JobsConfig = Field(default_factory=lambda: JobsConfig())
    """Where jobs are stored and how they are fired (see docs/jobs.md)."""
    actors: ActorsConfig = Field(default_factory=lambda: ActorsConfig())
    """The actors block: its state store, lease, idle time, turn timeout (see docs/actors.md)."""
    bindings: dict[str, ComponentConfig] = Field(default_factory=dict)
    """Input and output bindings by name: ``{github: {type: http-in, ...}}`` (types from the registry)."""
    resiliency: ResiliencyConfig = Field(default_factory=lambda: ResiliencyConfig())
    """Timeouts, retries and circuit breakers per app and topic, instance ejection (docs/resiliency.md)."""
    max_event_bytes: int = Field(1024 * 1024, ge=1024)
    """Largest encoded event the mesh publishes."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the mesh's own log lines under ``mesh run``."""
    event_loop: Literal["asyncio", "uvloop", "auto"] = "asyncio"
    """The event loop ``mesh run`` serves on: ``uvloop`` needs the ``fast`` extra, ``auto`` takes it
    when installed (``mesh run --loop`` overrides this)."""
    drain_timeout: float = Field(30.0, ge=0)
    """Seconds handlers in flight get to finish when the app stops; then they are cancelled and
    their deliveries given back to the broker (``'30s'``, ``'2m'`` also work)."""

    _durations = field_validator("drain_timeout", mode="before")(lambda v: parse_duration(v))
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _source: str | None = PrivateAttr(default=None)

    def where(self, path: str) -> str:
        """``path`` with its line in the file this config came from, when known (for errors found at start)."""
        probe = path
        while probe:
            if probe in self._lines:
                return f"{path} (line {self._lines[probe]})"
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return path

    @property
    def source(self) -> str | None:
        """The file this config was read from, if any."""
        return self._source

    def for_topic(self, topic: str) -> SubscriptionConfig:
        """The defaults overlaid with ``subscriptions.<topic>``."""
        specific = self.subscriptions.get(topic)
        if specific is None:
            return self.defaults
        merged = self.defaults.model_dump(exclude_none=True)
        merged.update(specific.model_dump(exclude_none=True, exclude_unset=True))
        return SubscriptionConfig.model_validate(merged)
