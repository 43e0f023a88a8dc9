"""Secret stores: ``{secretKeyRef: {store: S, name: X}}`` in the config and ``app.secrets`` read here.

=========  ===================================================================================
type       where secrets come from
=========  ===================================================================================
``env``    environment variables (``prefix`` optional)
``file``   ``path`` a folder: one file per secret (as Docker and Kubernetes mount them; default
           ``/run/secrets``); ``path`` a ``.json``/``.yaml``/``.yml`` file: one mapping of them
``dotenv`` ``path`` a ``.env`` file: ``NAME=value`` lines (``export``, quotes and ``#`` comments)
plugins    stores a plugin registers (``registry.add_secret_store`` in ``mesh_register_components``)
=========  ===================================================================================

A store is named in ``secrets:`` (``{vault: {type: file, path: ..., allowed: [db-password]}}``);
without ``type`` the name is the type, so ``secrets: {file: {path: ...}}`` works as before.
``allowed``/``denied`` limit the names a store gives out, to ``secretKeyRef`` and
``app.secrets`` alike. Errors name the store and the secret, never a value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SecretAccessDenied",
    "SecretLookupError",
    "SecretStore",
    "builtin_stores",
    "open_store",
]

SecretStore = Callable[[str], str]
"""A secret store: name in, value out; raises :class:`SecretLookupError` when it has none."""


class SecretLookupError(LookupError):
    """A store has no secret of that name."""


class SecretAccessDenied(SecretLookupError, PermissionError):
    """The store's ``allowed``/``denied`` lists keep that secret from this app."""


def env_store(settings: Mapping[str, Any]) -> SecretStore:
    """Secrets from environment variables (``prefix`` optional)."""
    prefix = str(settings.get("prefix", ""))

    def get(name: str) -> str:
        try:
            return os.environ[prefix + name]
        except KeyError:
            raise SecretLookupError(f"environment variable {prefix + name!r} is not set") from None

    return get


def _mapping_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretLookupError(f"cannot read secrets file {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise SecretLookupError(f"secrets file {str(path)!r} is not valid {path.suffix[1:].upper()}") from None
    if not isinstance(data, dict):
        raise SecretLookupError(f"secrets file {str(path)!r} must hold one mapping of name to value")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def file_store(settings: Mapping[str, Any]) -> SecretStore:
    """Secrets from files in a folder (trailing newline stripped), or from one JSON/YAML file."""
    root = Path(str(settings.get("path", "/run/secrets")))
    if root.suffix in (".json", ".yaml", ".yml"):
        return _lookup_in(root, _mapping_file)

    def get(name: str) -> str:
        path = root / name
        if path.resolve().parent != root.resolve():
            raise SecretLookupError(f"secret name {name!r} must be a plain file name")
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise SecretLookupError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None

    return get


def _dotenv(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SecretLookupError(f"cannot read dotenv file {str(path)!r}: {exc.strerror}") from None
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[name.strip()] = value
    return out


def dotenv_store(settings: Mapping[str, Any]) -> SecretStore:
    """Secrets from a ``.env`` file (``path``, default ``.env``), read at each lookup."""
    return _lookup_in(Path(str(settings.get("path", ".env"))), _dotenv)


def _lookup_in(path: Path, read: Callable[[Path], dict[str, str]]) -> SecretStore:
    def get(name: str) -> str:
        values = read(path)
        if name not in values:
            raise SecretLookupError(f"{str(path)!r} has no secret {name!r}")
        return values[name]

    return get


def builtin_stores() -> dict[str, Callable[[Mapping[str, Any]], SecretStore]]:
    """The store types every app has: type -> factory taking the store's settings."""
    return {"env": env_store, "file": file_store, "dotenv": dotenv_store}


def _listed(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatchcase(name, str(p)) for p in patterns)


def open_store(
    name: str, conf: Mapping[str, Any], factories: Mapping[str, Callable[[Mapping[str, Any]], SecretStore]]
) -> SecretStore | None:
    """The store ``name`` configured by ``conf`` (``type``, ``allowed``, ``denied``, settings), or
    ``None`` when its type is not known."""
    kind = str(conf.get("type") or name)
    factory = factories.get(kind)
    if factory is None:
        return None
    allowed = conf.get("allowed")
    denied = tuple(conf.get("denied") or ())
    settings = {k: v for k, v in conf.items() if k not in ("type", "allowed", "denied")}
    inner = factory(settings)
    if allowed is None and not denied:
        return inner

    def get(secret: str) -> str:
        if _listed(secret, denied) or (allowed is not None and not _listed(secret, tuple(allowed))):
            raise SecretAccessDenied(f"secret {secret!r} is not allowed from store {name!r}")
        return inner(secret)

    return get
