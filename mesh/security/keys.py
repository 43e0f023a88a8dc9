"""Signing and verifying keys from config text, through the ``cryptography`` package.

=====================  =======================================================================
key text               read as
=====================  =======================================================================
PEM private key        Ed25519, or ECDSA P-256 (signatures as raw ``r || s``, 64 bytes, as the
                       verifiability extension's test vectors have them; DER is also read)
base64 of 32 bytes     an Ed25519 private seed (``signing.key``) or public key (``trust.keys``)
``ed25519:<base64>``   the same, with its algorithm named
=====================  =======================================================================

A key that does not parse is a :class:`~mesh.errors.ConfigError` naming its place in the
config, never its text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from mesh.errors import ConfigError

__all__ = ["Sign", "Verify", "load_private", "load_public", "public_of"]

Sign = Callable[[bytes], bytes]
Verify = Callable[[bytes, bytes], bool]


def _need_cryptography(where: str) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ConfigError(
            [(where, "signed events need the 'cryptography' package: pip install 'event-mesh[security]'")]
        ) from None


def _raw(text: str) -> bytes | None:
    body = text.strip().removeprefix("ed25519:").strip()
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_private(text: str, where: str) -> tuple[Sign, object]:
    """``(sign, public key)`` of a private key's text (see the module docstring)."""
    _need_cryptography(where)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key: object
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError([(where, "not a readable PEM private key (unencrypted PKCS#8 expected)")]) from None
    else:
        raw = _raw(text)
        if raw is None:
            raise ConfigError([(where, "not a PEM private key nor the base64 of a 32-byte Ed25519 seed")])
        key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign, key.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        ec_key = key

        def sign(message: bytes) -> bytes:
            r, s = decode_dss_signature(ec_key.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign, key.public_key()
    raise ConfigError([(where, "only Ed25519 and ECDSA P-256 keys are supported")])


def load_public(text: str, where: str) -> Verify:
    """``verify(message, sig) -> bool`` of a public key's text (see the module docstring)."""
    _need_cryptography(where)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError):
            raise ConfigError([(where, "not a readable PEM public key")]) from None
        return public_of(key, where)
    raw = _raw(text)
    if raw is None:
        raise ConfigError([(where, "not a PEM public key nor the base64 of a 32-byte Ed25519 key")])
    return public_of(ed25519.Ed25519PublicKey.from_public_bytes(raw), where)


def public_of(key: object, where: str) -> Verify:
    """The verify function of a loaded public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if isinstance(key, ed25519.Ed25519PublicKey):
        ed_key = key

        def verify_ed(message: bytes, sig: bytes) -> bool:
            try:
                ed_key.verify(sig, message)
            except InvalidSignature:
                return False
            return True

        return verify_ed
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        ec_key = key

        def verify_ec(message: bytes, sig: bytes) -> bool:
            der = sig
            if len(sig) == 64:
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            try:
                ec_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify_ec
    raise ConfigError([(where, "only Ed25519 and ECDSA P-256 keys are supported")])
