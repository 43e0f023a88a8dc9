"""NATS over TLS with a token or a user/password, against a private nats-server (``verify: true``).

The NATS adapter does not wire ``broker.tls``/``broker.auth`` yet (it refuses them with a
ConfigError, never ignores them): the round trips are expected failures until it does. The
server side (TLS block, authorization block) is ready here for that work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.brokers.nats.core import NatsBroker
from tests.security.tls_support import PASSWORD, USER, Pki, Server, pki, refused, roundtrip, start_nats

__all__ = ["pki"]  # fixture used below

pytestmark = [pytest.mark.nats]



@pytest.fixture(scope="module")
def nats_token(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """nats-server with TLS (client certificates verified) and a token."""
    server = start_nats(pki, tmp_path_factory.mktemp("nats"), f'authorization {{ token: "{PASSWORD}" }}')
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nats_user(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """nats-server with TLS (client certificates verified) and user ``mesh``."""
    auth = f'authorization {{ users: [ {{ user: "{USER}", password: "{PASSWORD}" }} ] }}'
    server = start_nats(pki, tmp_path_factory.mktemp("nats"), auth)
    yield server
    server.stop()


def url(server: Server) -> str:
    return f"tls://localhost:{server.port}"


async def test_tls_with_token(pki: Pki, nats_token: Server) -> None:
    """TLS with client certificate and a token."""
    await roundtrip(NatsBroker(url(nats_token), tls=pki.tls(), auth={"token": PASSWORD}))


async def test_tls_with_user_and_password(pki: Pki, nats_user: Server) -> None:
    """TLS with client certificate and user/password."""
    await roundtrip(NatsBroker(url(nats_user), tls=pki.tls(), auth={"username": USER, "password": PASSWORD}))


async def test_wrong_ca(pki: Pki, nats_token: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A CA that did not sign the server's certificate: a clear error naming nats."""
    broker = NatsBroker(url(nats_token), tls={**pki.tls(), "ca": str(pki.wrong_ca)}, auth={"token": PASSWORD})
    await refused(broker, caplog, name="nats", why="certificate verify failed")


async def test_missing_client_certificate(pki: Pki, nats_token: Server, caplog: pytest.LogCaptureFixture) -> None:
    """The server verifies client certificates and none is given."""
    broker = NatsBroker(url(nats_token), tls=pki.tls(cert=False), auth={"token": PASSWORD})
    await refused(broker, caplog, name="nats", why="client certificate")


async def test_wrong_token(pki: Pki, nats_token: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong token is refused without showing either token."""
    broker = NatsBroker(url(nats_token), tls=pki.tls(), auth={"token": PASSWORD[::-1]})
    text = await refused(broker, caplog, name="nats", why="authorization")
    assert PASSWORD[::-1] not in text


def test_servers_start(nats_token: Server, nats_user: Server) -> None:
    """The TLS nats-servers of this module run (their TLS and authorization blocks are valid)."""
    assert nats_token.proc.poll() is None and nats_user.proc.poll() is None


# -- what works today: the NATS adapter's own options (tls_*_file, token, user, password) ---------


def legacy(pki: Pki, *, cert: bool = True, ca: Path | None = None, **creds: str) -> dict[str, str]:
    """The NATS adapter's own TLS/credential options (before the common ``broker.tls`` shape)."""
    out = {"tls_ca_file": str(ca or pki.ca), "connect_timeout": "3", **creds}
    if cert:
        out |= {"tls_cert_file": str(pki.client_cert), "tls_key_file": str(pki.client_key)}
    return out


async def test_options_tls_with_token(pki: Pki, nats_token: Server) -> None:
    """Mutual TLS and a token through the adapter's options."""
    await roundtrip(NatsBroker(url(nats_token), options=legacy(pki, token=PASSWORD)))


async def test_options_tls_with_user_and_password(pki: Pki, nats_user: Server) -> None:
    """Mutual TLS and user/password through the adapter's options."""
    await roundtrip(NatsBroker(url(nats_user), options=legacy(pki, user=USER, password=PASSWORD)))


async def test_options_wrong_ca(pki: Pki, nats_token: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong CA through the options: a clear error naming nats, no token shown."""
    broker = NatsBroker(url(nats_token), options=legacy(pki, ca=pki.wrong_ca, token=PASSWORD))
    await refused(broker, caplog, name="nats", why="certificate verify failed")


async def test_options_missing_client_certificate(
    pki: Pki, nats_token: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The server verifies client certificates and none is given: refused, no token shown."""
    await refused(
        NatsBroker(url(nats_token), options=legacy(pki, cert=False, token=PASSWORD)), caplog, name="nats", why="nats"
    )


async def test_options_wrong_password(pki: Pki, nats_user: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password is refused without showing either password."""
    broker = NatsBroker(url(nats_user), options=legacy(pki, user=USER, password=PASSWORD[::-1]))
    text = await refused(broker, caplog, name="nats", why="authorization")
    assert PASSWORD[::-1] not in text
