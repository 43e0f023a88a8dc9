"""Reading a config file: YAML with line numbers, ``${VAR:default}`` substitution, secret references."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from mesh.config.secrets import SecretLookupError, SecretStore, builtin_stores, open_store

__all__ = ["Problems", "parse_yaml", "resolve_secrets", "substitute"]

Problems = list[tuple[str, str]]

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML; returns the data and the line (1-based) of every path in it."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise _yaml_error(source, where, str(getattr(exc, "problem", exc))) from None
    lines: dict[str, int] = {}

    def walk(n: yaml.Node | None, path: str) -> None:
        if n is None:
            return
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                child = _join(path, key_node.value)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, _join(path, i))

    walk(node, "")
    return data, lines


def _yaml_error(source: str, where: str, problem: str) -> Exception:
    from mesh.errors import ConfigError

    return ConfigError([(where or "<file>", f"invalid YAML: {problem}")], source)


def substitute(data: Any, problems: Problems, env: Mapping[str, str] | None = None, path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:default}`` in every string (``$$`` is a literal ``$``)."""
    environ = os.environ if env is None else env
    if isinstance(data, dict):
        return {k: substitute(v, problems, environ, _join(path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute(v, problems, environ, _join(path, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append((path, f"environment variable {name!r} is not set and has no default"))
        return ""

    whole = _VAR.fullmatch(data)
    result = _VAR.sub(repl, data)
    if whole and whole.group(0) != "$$" and result != data:
        return yaml.safe_load(result) if result else result  # "${PORT}" alone keeps its YAML type
    return result


def resolve_secrets(
    data: Any,
    problems: Problems,
    stores: Mapping[str, Callable[[Mapping[str, Any]], SecretStore]] | None = None,
    path: str = "",
) -> Any:
    """Replace every ``{secretKeyRef: {store: S, name: N}}`` by the secret's value."""
    factories = dict(builtin_stores() if stores is None else stores)
    settings = data.get("secrets", {}) if isinstance(data, dict) else {}
    opened: dict[str, SecretStore] = {}

    def store(name: str) -> SecretStore | None:
        if name not in opened:
            conf = settings.get(name, {}) if isinstance(settings, dict) else {}
            found = open_store(name, conf if isinstance(conf, dict) else {}, factories)
            if found is None:
                return None
            opened[name] = found
        return opened[name]

    def walk(node: Any, here: str) -> Any:
        if isinstance(node, dict):
            if set(node) == {"secretKeyRef"}:
                return lookup(node["secretKeyRef"], here)
            return {k: walk(v, _join(here, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, _join(here, i)) for i, v in enumerate(node)]
        return node

    def lookup(ref: Any, here: str) -> Any:
        where = _join(here, "secretKeyRef")
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            problems.append((where, "needs {store: <store>, name: <secret name>}"))
            return None
        store_name = str(ref.get("store", "env"))
        s = store(store_name)
        if s is None:
            known = ", ".join(sorted(factories))
            problems.append((_join(where, "store"), f"unknown secret store {store_name!r} (known: {known})"))
            return None
        try:
            return s(ref["name"])
        except SecretLookupError as exc:
            problems.append((where, f"secret {ref['name']!r} from store {store_name!r}: {exc}"))
            return None

    return walk(data, path)
