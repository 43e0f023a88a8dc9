"""Redis over TLS with an ACL user, against a private TLS-only redis-server (tests/security/tls_support.py)."""

from __future__ import annotations

import pytest

from mesh.brokers.redis.broker import RedisBroker
from tests.security.tls_support import PASSWORD, USER, Pki, Server, pki, redis_tls, redis_tls_open, refused, roundtrip

__all__ = ["pki", "redis_tls", "redis_tls_open"]  # fixtures used below

pytestmark = [pytest.mark.redis]

AUTH = {"username": USER, "password": PASSWORD}


def url(server: Server, host: str = "localhost") -> str:
    return f"rediss://{host}:{server.port}/0"


async def test_mutual_tls_with_acl_user(pki: Pki, redis_tls: Server) -> None:
    """CA, client certificate and key, ACL user/password: events go through."""
    await roundtrip(RedisBroker(url(redis_tls), tls=pki.tls(), auth=AUTH))


async def test_plain_redis_url_with_tls_settings_uses_tls(pki: Pki, redis_tls: Server) -> None:
    """``broker.tls`` turns TLS on even when the URL says ``redis://``."""
    await roundtrip(RedisBroker(f"redis://localhost:{redis_tls.port}/0", tls=pki.tls(), auth=AUTH))


async def test_key_given_as_pem_text(pki: Pki, redis_tls: Server) -> None:
    """The key (and CA, certificate) may be PEM text, as a secretKeyRef to a file store returns it."""
    tls = {"ca": pki.ca.read_text(), "cert": pki.client_cert.read_text(), "key": pki.client_key.read_text()}
    await roundtrip(RedisBroker(url(redis_tls), tls=tls, auth=AUTH))


async def test_server_without_client_certificates(pki: Pki, redis_tls_open: Server) -> None:
    """One-way TLS (no client certificate) with TLS 1.3 as the minimum."""
    await roundtrip(RedisBroker(url(redis_tls_open), tls=pki.tls(cert=False, min_version="TLSv1.3"), auth=AUTH))


async def test_hostname_check(pki: Pki, redis_tls_open: Server, caplog: pytest.LogCaptureFixture) -> None:
    """The certificate names localhost: 127.0.0.1 fails the check, and passes with the check off."""
    tls = pki.tls(cert=False)
    await refused(
        RedisBroker(url(redis_tls_open, "127.0.0.1"), tls=tls, auth=AUTH),
        caplog,
        name="redis",
        why="IP address mismatch",
    )
    await roundtrip(RedisBroker(url(redis_tls_open, "127.0.0.1"), tls={**tls, "check_hostname": False}, auth=AUTH))


async def test_wrong_ca(pki: Pki, redis_tls: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A CA that did not sign the server's certificate: a clear error naming redis."""
    broker = RedisBroker(url(redis_tls), tls={**pki.tls(), "ca": str(pki.wrong_ca)}, auth=AUTH)
    await refused(broker, caplog, name="redis", why="certificate verify failed")


async def test_missing_client_certificate(pki: Pki, redis_tls: Server, caplog: pytest.LogCaptureFixture) -> None:
    """The server requires a client certificate and none is given."""
    await refused(
        RedisBroker(url(redis_tls), tls=pki.tls(cert=False), auth=AUTH), caplog, name="redis", why="client certificate"
    )


async def test_wrong_password(pki: Pki, redis_tls: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong ACL password is refused without showing either password."""
    broker = RedisBroker(url(redis_tls), tls=pki.tls(), auth={"username": USER, "password": PASSWORD[::-1]})
    text = await refused(broker, caplog, name="redis", why="invalid username-password")
    assert PASSWORD[::-1] not in text
