"""Configuration: one YAML file, ``${VAR:default}`` substitution, secrets by reference, validated whole.

>>> cfg = load_config({"broker": {"type": "memory", "options": {"name": "doc"}}})
>>> cfg.broker.type, cfg.broker.options
('memory', {'name': 'doc'})

Every problem is reported at once, with its path (and line) in the file::

    mesh.errors.ConfigError: invalid configuration in mesh.yaml:
      broker.options.partitions (line 4): Input should be a valid integer
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mesh.components import Registry
from mesh.config.loader import Problems, parse_yaml, resolve_secrets, substitute
from mesh.config.models import (
    BrokerConfig,
    ComponentConfig,
    InvokeConfig,
    MeshConfig,
    PluginsConfig,
    PresenceConfig,
    RetryPolicy,
    SubscriptionConfig,
    component_problems,
    parse_duration,
)
from mesh.config.secrets import builtin_stores
from mesh.errors import ConfigError
from mesh.resiliency.config import resiliency_problems, resiliency_warnings

__all__ = [
    "BrokerConfig",
    "ComponentConfig",
    "InvokeConfig",
    "MeshConfig",
    "PluginsConfig",
    "PresenceConfig",
    "RetryPolicy",
    "SubscriptionConfig",
    "config_schema",
    "find_config",
    "load_config",
    "parse_duration",
    "plugin_settings",
]

DEFAULT_FILE = "mesh.yaml"

log = logging.getLogger("mesh.config")

M = TypeVar("M", bound=BaseModel)


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use: the argument, else ``$MESH_CONFIG``, else ``./mesh.yaml`` or ``./mesh.yml``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("MESH_CONFIG")
    if env:
        return Path(env)
    for name in (DEFAULT_FILE, "mesh.yml"):
        local = Path(name)
        if local.is_file():
            return local
    return None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[")):  # pydantic's internal loc markers
            continue
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _with_line(path: str, lines: Mapping[str, int]) -> str:
    probe = path
    while probe:
        if probe in lines:
            return f"{path} (line {lines[probe]})"
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""
    return path


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | MeshConfig | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stores: Mapping[str, Callable[[Mapping[str, Any]], Callable[[str], str]]] | None = None,
    registry: Registry | None = None,
) -> MeshConfig:
    """Load and validate a config from a file path, a mapping, or the default places.

    With no argument: ``$MESH_CONFIG``, else ``./mesh.yaml``, else the memory broker defaults.
    ``stores`` adds secret stores (name -> factory) to the built-in ``env`` and ``file``;
    ``registry`` (the App's components) adds the broker types and stores plugins registered.
    Raises :class:`~mesh.errors.ConfigError` listing every problem with its path.
    """
    if isinstance(source, MeshConfig):
        return source
    lines: dict[str, int] = {}
    name: str | None = None
    if source is None or isinstance(source, str | os.PathLike):
        path = find_config(source)
        if path is None:
            return MeshConfig()
        name = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError([("<file>", f"cannot read {name}: {exc.strerror}")], name) from None
        data, lines = parse_yaml(text, name)
        data = {} if data is None else data
    else:
        data = dict(source)
    if not isinstance(data, dict):
        raise ConfigError([("<root>", "the config must be a mapping")], name)
    problems: Problems = []
    data = substitute(data, problems, env)
    problems.extend(resiliency_problems(data.get("resiliency")))
    extra_stores = {**(registry.secret_stores if registry else {}), **(stores or {})}
    data = resolve_secrets(data, problems, {**builtin_stores(), **extra_stores})
    try:
        config = MeshConfig.model_validate(data, context={"registry": registry} if registry else None)
    except ValidationError as exc:
        reported = {path for path, _ in problems}
        for err in exc.errors():
            loc = tuple(err["loc"])
            broker_keys = data.get("broker") if isinstance(data.get("broker"), dict) else {}
            misspelt = len(loc) == 2 and loc[1] in broker_keys  # a key of broker: itself, not of its options
            if len(loc) > 1 and loc[0] == "broker" and loc[1] not in BrokerConfig.model_fields and not misspelt:
                loc = ("broker", "options", *loc[1:])  # raised by the broker's options model
            where = _loc(loc)
            if not any(r == where or r.startswith(where + ".") for r in reported):  # one report per cause
                message = _message(err)
                if err["type"] == "extra_forbidden":
                    message += _did_you_mean(loc, data, registry)
                problems.append((where, message))
        config = None
    if config is not None:
        config = _with_components(config, registry or Registry(), problems)
    if problems:
        raise ConfigError([(_with_line(p, lines), m) for p, m in problems], name)
    assert config is not None
    for where, message in resiliency_warnings(config.resiliency):
        log.warning("%s%s: %s", f"{name}: " if name else "", _with_line(where, lines), message)
    config._lines.update(lines)
    config._source = name
    return config


def _with_components(config: MeshConfig, registry: Registry, problems: Problems) -> MeshConfig:
    """The config with each block's components validated by their registered type's options model."""
    update: dict[str, Any] = {}
    for kind, section in (("state", "state"), ("binding", "bindings")):
        value = getattr(config, section)
        if value:
            update[section], found = component_problems(kind, section, value, registry)
            problems.extend(found)
    return config.model_copy(update=update) if update else config


def _did_you_mean(loc: tuple[Any, ...], data: Mapping[str, Any], registry: Registry | None) -> str:
    """``"; did you mean 'x'?"`` for a misspelt key, from the keys its model knows ("" if none is close)."""
    model: Any = MeshConfig
    mapping = False  # the part before was a dict[str, Model]: this part is one of its keys
    for i, part in enumerate(loc[:-1]):
        if loc[: i + 1] == ("broker", "options"):
            kind = data.get("broker", {}).get("type", "memory") if isinstance(data.get("broker"), dict) else "memory"
            try:
                model = (registry or Registry()).options_model("broker", str(kind))
            except ConfigError:
                return ""
            continue
        if mapping:
            mapping = False
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return ""
        annotation = fields[part].annotation
        mapping = typing.get_origin(annotation) is dict
        model = _model_in(annotation)
    fields = getattr(model, "model_fields", None)
    if not fields:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (``X | None``, ``dict[str, X]``), or ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(typing.get_args(annotation)):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    return msg


def plugin_settings(model: type[M], config: MeshConfig, plugin: str) -> M:
    """Validate ``plugins.config.<plugin>`` with a plugin's pydantic model; problems name their path."""
    try:
        return model.model_validate(config.plugins.config.get(plugin, {}))
    except ValidationError as exc:
        prefix = ("plugins", "config", plugin)
        raise ConfigError([(_loc((*prefix, *err["loc"])), _message(err)) for err in exc.errors()]) from None


def config_schema(registry: Registry | None = None) -> str:
    """The JSON Schema of ``mesh.yaml`` (what ``schemas/mesh-config.schema.json`` holds).

    ``broker.type`` lists the registry's broker types, and ``broker.options`` is checked against
    the options model of the type chosen (one ``if``/``then`` per type).
    """
    registry = registry or Registry()
    schema = MeshConfig.model_json_schema()
    broker = schema["$defs"]["BrokerConfig"]
    types = registry.types("broker")
    broker["properties"]["type"]["enum"] = types
    rules = []
    for kind in types:
        model = registry.options_model("broker", kind)
        if model is None:
            continue
        options = model.model_json_schema()
        for name, definition in options.pop("$defs", {}).items():
            schema["$defs"].setdefault(name, definition)
        rules.append({"if": {"properties": {"type": {"const": kind}}}, "then": {"properties": {"options": options}}})
    broker["allOf"] = rules
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mesh.yaml"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
