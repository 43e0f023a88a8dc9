"""Transport security of every broker: the ``broker.tls`` and ``broker.auth`` models and the TLS context.

One shape for every broker type (``broker: {type, url, tls: {...}, auth: {...}}``); each
adapter declares which parts it takes (:attr:`Broker.auth_fields`, :attr:`Broker.tls_supported`)
and the base class refuses the rest with a :class:`~mesh.errors.ConfigError`, so a setting is
never silently ignored.

==============  ====================  ==========================================================
broker          ``tls``               ``auth``
==============  ====================  ==========================================================
kafka           ``SSL`` / SASL_SSL    ``mechanism`` PLAIN, SCRAM-SHA-256/512 + username/password
rabbitmq        ``amqps://``          username/password, or ``mechanism: EXTERNAL`` (the client
                                      certificate is the identity)
redis           ``rediss://``         ACL username/password
nats            not wired yet         (token, username/password, nkey_seed, creds_file planned)
==============  ====================  ==========================================================

``ca``, ``cert`` and ``key`` are each a file path or the PEM text itself (what a
``secretKeyRef`` to a ``file`` store returns). PEM text of a certificate or key is written to a
private temporary file only for the moment OpenSSL loads it, then removed. Secrets are
``SecretStr``: they never show in ``repr``, logs or error messages.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from mesh.errors import ConfigError

__all__ = ["AuthOptions", "TlsOptions", "is_pem", "ssl_context", "tls_hint"]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsOptions(_Strict):
    """``broker.tls``: how to verify the broker and which certificate to show it."""

    ca: str | None = None
    """CA bundle to verify the broker with: a path or PEM text (default: the system's CAs)."""
    cert: str | None = None
    """Client certificate (chain) for mutual TLS: a path or PEM text; needs ``key``."""
    key: SecretStr | None = None
    """Private key of ``cert``: a path or PEM text (use a ``secretKeyRef``)."""
    key_password: SecretStr | None = None
    """Password of an encrypted ``key``."""
    check_hostname: bool = True
    """Check that the broker's certificate names the host connected to."""
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    """Oldest TLS version accepted."""

    @model_validator(mode="after")
    def _pair(self) -> TlsOptions:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (a client certificate needs its private key)")
        return self


class AuthOptions(_Strict):
    """``broker.auth``: who the mesh is on the broker (each broker takes a subset, see the table)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "EXTERNAL"] | None = None
    """SASL mechanism (Kafka: PLAIN or SCRAM-*; RabbitMQ: PLAIN or EXTERNAL); default PLAIN
    when a user name is given."""
    username: str | None = None
    """User name (overrides the URL's)."""
    password: SecretStr | None = None
    """Password (overrides the URL's; use a ``secretKeyRef``)."""
    token: SecretStr | None = None
    """NATS authentication token."""
    nkey_seed: SecretStr | None = None
    """NATS NKey seed (``SU...``): a path or the seed itself."""
    creds_file: str | None = None
    """NATS credentials file (JWT and seed)."""

    def given(self) -> list[str]:
        """The names of the fields that are set."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


def is_pem(value: str) -> bool:
    """Whether ``value`` is PEM text rather than a path."""
    return "-----BEGIN " in value


@contextlib.contextmanager
def _as_file(value: str) -> Iterator[str]:
    """A path holding ``value``: the path itself, or a private temporary file of PEM text."""
    if not is_pem(value):
        yield value
        return
    fd, path = tempfile.mkstemp(prefix="mesh-tls-", suffix=".pem")  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def ssl_context(tls: TlsOptions, broker: str) -> ssl.SSLContext:
    """A client-side TLS context from ``tls``; a file that cannot be loaded is a ConfigError naming ``broker``."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.check_hostname = tls.check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.ca is not None:
        try:
            if is_pem(tls.ca):
                ctx.load_verify_locations(cadata=tls.ca)
            else:
                ctx.load_verify_locations(cafile=tls.ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError([("broker.tls.ca", f"{broker}: cannot load the CA: {_why(exc)}")]) from None
    if tls.cert is not None and tls.key is not None:
        key = tls.key.get_secret_value()
        password = tls.key_password.get_secret_value() if tls.key_password else None
        try:
            with _as_file(tls.cert) as certfile, _as_file(key) as keyfile:
                ctx.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError, ValueError) as exc:
            what = "cannot load the client certificate and key"
            raise ConfigError([("broker.tls.cert", f"{broker}: {what}: {_why(exc)}")]) from None
    return ctx


def _why(exc: BaseException) -> str:
    """A load failure as one line, without the file content (paths of temporary files hidden)."""
    if isinstance(exc, OSError) and exc.filename and "mesh-tls-" in str(exc.filename):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def tls_hint(tls: TlsOptions | None, reason: str) -> str:
    """What in ``broker.tls`` likely caused a connection failure, as a suffix for its message ("" if unknown)."""
    if tls is None:
        return ""
    low = reason.lower()
    if "certificate verify failed" in low:
        if "mismatch" in low or "hostname" in low:
            return " (the broker's certificate does not name this host: check the URL or broker.tls.check_hostname)"
        return " (the broker's certificate is not trusted: check broker.tls.ca)"
    # what a server says (or does) when it wants a client certificate: TLS 1.2 servers send "bad certificate"
    lost = (
        "reset by peer",
        "certificate required",
        "handshake failure",
        "connection closed",
        "eof",
        "broken pipe",
        "bad certificate",
    )
    if tls.cert is None and any(s in low for s in lost):
        return " (the broker may require a client certificate: set broker.tls.cert and broker.tls.key)"
    return ""
