"""Secret stores: ``{secretKeyRef: {store: env, name: X}}`` anywhere in the config is resolved here.

Stores: ``env`` (environment variables) and ``file`` (one file per secret in a directory, as
Docker and Kubernetes mount them; default ``/run/secrets``, set ``secrets.file.path``). Plugins add
stores through the ``mesh_register_components`` hook.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SecretLookupError", "SecretStore", "builtin_stores"]

SecretStore = Callable[[str], str]
"""A secret store: name in, value out; raises :class:`SecretLookupError` when it has none."""


class SecretLookupError(LookupError):
    """A store has no secret of that name."""


def env_store(settings: Mapping[str, Any]) -> SecretStore:
    """Secrets from environment variables (``prefix`` optional)."""
    prefix = str(settings.get("prefix", ""))

    def get(name: str) -> str:
        try:
            return os.environ[prefix + name]
        except KeyError:
            raise SecretLookupError(f"environment variable {prefix + name!r} is not set") from None

    return get


def file_store(settings: Mapping[str, Any]) -> SecretStore:
    """Secrets from files in a directory (trailing newline stripped)."""
    root = Path(str(settings.get("path", "/run/secrets")))

    def get(name: str) -> str:
        path = root / name
        if path.resolve().parent != root.resolve():
            raise SecretLookupError(f"secret name {name!r} must be a plain file name")
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise SecretLookupError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None

    return get


def builtin_stores() -> dict[str, Callable[[Mapping[str, Any]], SecretStore]]:
    """The stores every app has: name -> factory taking the store's settings."""
    return {"env": env_store, "file": file_store}
