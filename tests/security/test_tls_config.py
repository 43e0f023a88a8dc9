"""``broker.tls`` / ``broker.auth`` from a config file, with secret references, end to end (redis)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mesh import App
from mesh.errors import ConfigError
from tests.security.tls_support import PASSWORD, USER, Pki, Server, pki, redis_tls, roundtrip

__all__ = ["pki", "redis_tls"]  # fixtures used below


@pytest.fixture
def secrets_dir(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file store holding the client key; the password in an environment variable."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    shutil.copy(pki.client_key, folder / "app-key")
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)
    return folder


@pytest.mark.redis
async def test_config_with_secret_references(pki: Pki, redis_tls: Server, secrets_dir: Path) -> None:
    """The issue's shape: key from a file store, password from env; neither shows in the config's repr."""
    config = {
        "secrets": {"file": {"path": str(secrets_dir)}},
        "broker": {
            "type": "redis",
            "url": f"rediss://localhost:{redis_tls.port}/0",
            "tls": {
                "ca": str(pki.ca),
                "cert": str(pki.client_cert),
                "key": {"secretKeyRef": {"store": "file", "name": "app-key"}},
            },
            "auth": {"username": USER, "password": {"secretKeyRef": {"store": "env", "name": "REDIS_PASSWORD"}}},
        },
    }
    app = App("tlsapp", config=config)
    shown = repr(app.config) + repr(app.broker)
    assert PASSWORD not in shown and "PRIVATE KEY" not in shown
    await roundtrip(app.broker)


def test_broker_without_tls_support_refuses_it(pki: Pki) -> None:
    """A broker type that does not wire TLS says so instead of connecting in the clear."""
    with pytest.raises(ConfigError, match="memory broker does not take tls"):
        App("tlsapp", config={"broker": {"type": "memory", "tls": {"ca": str(pki.ca)}}})


def test_auth_field_the_broker_does_not_take() -> None:
    """A credential the broker cannot use is named in the error (with what it takes)."""
    with pytest.raises(
        ConfigError, match=r"broker.auth.token: the redis broker does not take it \(it takes: password, username\)"
    ):
        App("tlsapp", config={"broker": {"type": "redis", "auth": {"token": PASSWORD}}})


def test_certificate_without_key() -> None:
    """A client certificate needs its key: a config error at load time."""
    with pytest.raises(ConfigError, match="cert and key go together"):
        App("tlsapp", config={"broker": {"type": "redis", "tls": {"cert": "/x.pem"}}})


def test_unreadable_ca_names_the_broker(tmp_path: Path) -> None:
    """A CA file that is missing fails at start-up with the broker's name and the setting's path."""
    with pytest.raises(ConfigError, match=r"broker.tls.ca: rabbitmq: cannot load the CA"):
        App("tlsapp", config={"broker": {"type": "rabbitmq", "tls": {"ca": str(tmp_path / "none.pem")}}})
