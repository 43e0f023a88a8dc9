"""Keys and configs for the security tests: fresh Ed25519 pairs, one mesh config per app."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support import BrokerSpec


def keypair() -> tuple[str, str]:
    """(private seed, public key), each the base64 of 32 raw bytes."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


class Keys:
    """A key pair per (app, key id), and the trust section naming them all."""

    def __init__(self, **apps: list[str]) -> None:
        self.pairs = {key_id: keypair() for ids in apps.values() for key_id in ids}
        self.apps = apps

    def trust(self) -> dict[str, Any]:
        return {
            "keys": {key_id: f"ed25519:{pub}" for key_id, (_, pub) in self.pairs.items()},
            "apps": {app: list(ids) for app, ids in self.apps.items()},
        }

    def security(self, key_id: str | None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"trust": self.trust(), "require_signed": True, **extra}
        if key_id is not None:
            out["signing"] = {"key": self.pairs[key_id][0], "key_id": key_id}
        return out


def config(spec: BrokerSpec, namespace: str, security: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """A config on ``spec``'s broker with a namespace of the test's own and fast retries."""
    out: dict[str, Any] = {
        "broker": {**spec.config(), "namespace": namespace},
        "defaults": {"retry": {"attempts": 1, "immediate": 0}},
        "presence": {"interval": "500ms", "expiry": "1500ms"},
        **more,
    }
    if security is not None:
        out["security"] = security
    return out
