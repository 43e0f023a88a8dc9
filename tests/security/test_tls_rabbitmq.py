"""RabbitMQ over amqps against a private TLS node: PLAIN user/password and EXTERNAL (client certificate)."""

from __future__ import annotations

import pytest

from mesh.brokers.rabbitmq.broker import RabbitMQBroker
from mesh.errors import ConfigError
from tests.security.tls_support import PASSWORD, USER, Pki, RabbitNode, pki, rabbit_tls, refused, roundtrip

__all__ = ["pki", "rabbit_tls"]  # fixtures used below

pytestmark = [pytest.mark.rabbitmq]

AUTH = {"username": USER, "password": PASSWORD}


def url(node: RabbitNode, host: str = "localhost") -> str:
    return f"amqps://{host}:{node.port}/"


async def test_tls_with_user_and_password(pki: Pki, rabbit_tls: RabbitNode) -> None:
    """amqps with our CA, a client certificate and PLAIN user/password from ``broker.auth``."""
    await roundtrip(RabbitMQBroker(url(rabbit_tls), tls=pki.tls(), auth=AUTH))


async def test_tls_without_client_certificate(pki: Pki, rabbit_tls: RabbitNode) -> None:
    """One-way TLS; an ``amqp://`` URL becomes ``amqps`` when ``broker.tls`` is set."""
    broker = RabbitMQBroker(f"amqp://localhost:{rabbit_tls.port}/", tls=pki.tls(cert=False), auth=AUTH)
    await roundtrip(broker)


async def test_external_login_with_client_certificate(pki: Pki, rabbit_tls: RabbitNode) -> None:
    """``mechanism: EXTERNAL``: no password, the certificate's CN is the user."""
    await roundtrip(RabbitMQBroker(url(rabbit_tls), tls=pki.tls(), auth={"mechanism": "EXTERNAL"}))


def test_external_needs_a_client_certificate(pki: Pki) -> None:
    """EXTERNAL without a client certificate is a config error, before any connection."""
    with pytest.raises(ConfigError, match="EXTERNAL needs a client certificate"):
        RabbitMQBroker("amqps://localhost/", tls=pki.tls(cert=False), auth={"mechanism": "EXTERNAL"})


async def test_wrong_ca(pki: Pki, rabbit_tls: RabbitNode, caplog: pytest.LogCaptureFixture) -> None:
    """A CA that did not sign the node's certificate: a clear error naming rabbitmq."""
    broker = RabbitMQBroker(url(rabbit_tls), tls={**pki.tls(), "ca": str(pki.wrong_ca)}, auth=AUTH)
    await refused(broker, caplog, name="rabbitmq", why="certificate verify failed")


async def test_hostname_check(pki: Pki, rabbit_tls: RabbitNode, caplog: pytest.LogCaptureFixture) -> None:
    """The certificate names localhost only: 127.0.0.1 fails the check."""
    broker = RabbitMQBroker(url(rabbit_tls, "127.0.0.1"), tls=pki.tls(), auth=AUTH)
    await refused(broker, caplog, name="rabbitmq", why="does not name this host")


async def test_wrong_password(pki: Pki, rabbit_tls: RabbitNode, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password is refused; neither password shows anywhere."""
    wrong = PASSWORD[::-1]
    broker = RabbitMQBroker(url(rabbit_tls), tls=pki.tls(), auth={"username": USER, "password": wrong})
    text = await refused(broker, caplog, name="rabbitmq", why="authentication failed")
    assert wrong not in text and wrong not in caplog.text


async def test_password_in_url_is_masked(pki: Pki, rabbit_tls: RabbitNode, caplog: pytest.LogCaptureFixture) -> None:
    """A password written in the URL (not advised) is not shown either when the login fails."""
    broker = RabbitMQBroker(f"amqps://nobody:{PASSWORD}@localhost:{rabbit_tls.port}/", tls=pki.tls())
    await refused(broker, caplog, name="rabbitmq", why="authentication failed")
