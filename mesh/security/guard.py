"""One app's security settings at work: seal what it sends, open what it receives.

================================  ===========================================================
step                              what
================================  ===========================================================
seal (publish, request, reply)    encrypt the data if the topic is encrypted and the event is
                                  not yet; sign if this app has a key and the event is not
                                  signed yet (retry copies, dead letters and replays keep the
                                  producer's signature: their added extensions are unsigned)
open (delivery, reply)            verify (unsigned: pass, or ``unsigned`` when required), map
                                  the key id to its app, check ``source`` is that app, check
                                  the publish scope of the signer, then decrypt
================================  ===========================================================

Encrypt-then-sign: the signature covers the ciphertext and ``meshkeyid``, so anyone with the
public key can verify, and only holders of the AES key can read. AES-GCM binds the ciphertext
to the event's ``id`` and ``source`` (additional data), so it cannot be moved to another event;
a replay keeps both, so replayed and redriven events open with the same key.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections import Counter
from fnmatch import fnmatchcase
from typing import Any

from mesh.codecs.data import decode_data, encode_data
from mesh.config.models import ScopesConfig, SecurityConfig
from mesh.errors import ConfigError, MeshError
from mesh.event import Event, ExtensionValue
from mesh.extensions import (
    CRYPT_CONTENT_TYPE,
    DSSE_MATERIAL,
    KEY_ID,
    RESERVED_PREFIX,
    SIGNED_EXTENSIONS,
    TOPIC,
    UNSIGNED_EXTENSIONS,
)
from mesh.security import dsse
from mesh.security.keys import Sign, Verify, load_private, load_public, public_of

__all__ = ["ScopeError", "Security"]

OCTETS = "application/octet-stream"


class ScopeError(MeshError, PermissionError):
    """This app may not publish to or subscribe to a topic (``security.scopes``)."""


def _with(event: Event, extensions: dict[str, ExtensionValue], **changes: Any) -> Event:
    """A copy with other extensions (and attributes), keeping the encoded data when it is the same."""
    new = Event._trusted(
        changes.get("type", event.type),
        event.source,
        event.id,
        changes.get("data", event.data),
        event.subject,
        event.time,
        changes.get("datacontenttype", event.datacontenttype),
        event.dataschema,
        extensions,
        event.specversion,
    )
    if "data" not in changes:
        new._body = event._body
    return new


def _allowed(topic: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(topic, p) for p in patterns)


class Security:
    """Signing key, trusted keys, scopes and encryption keys of one app (see the module docstring)."""

    def __init__(self, app_id: str, config: SecurityConfig) -> None:
        self.app_id = app_id
        self.checking = config.checking
        self.require_signed = config.require_signed
        self.scopes: ScopesConfig = config.scopes
        self.rejected: Counter[str] = Counter()
        """Rejections by code (:data:`mesh.security.dsse.CODES`)."""
        self._sign: Sign | None = None
        self._key_id = ""
        self._trusted: dict[str, tuple[str, Verify]] = {}
        owners = {k: app for app, ids in config.trust.apps.items() for k in ids}
        for key_id, text in config.trust.keys.items():
            if key_id in owners:
                self._trusted[key_id] = (owners[key_id], load_public(text, f"security.trust.keys.{key_id}"))
        if config.signing is not None:
            sign, public = load_private(config.signing.key.get_secret_value(), "security.signing.key")
            self._sign, self._key_id = sign, config.signing.key_id
            self._trusted.setdefault(self._key_id, (app_id, public_of(public, "security.signing.key")))
        self._aes: dict[str, Any] = {}
        for key_id, secret in config.encryption.keys.items():
            self._aes[key_id] = _aes(secret.get_secret_value(), f"security.encryption.keys.{key_id}")
        self._encrypt = tuple(config.encryption.topics.items())

    # -- sending -------------------------------------------------------------------------------

    def may_publish(self, app: str, topic: str) -> bool:
        """Whether ``security.scopes.publish`` lets ``app`` publish to ``topic``."""
        scope = self.scopes.publish.get(app)
        return scope is None or topic.startswith(RESERVED_PREFIX) or _allowed(topic, scope)

    def may_subscribe(self, app: str, topic: str) -> bool:
        """Whether ``security.scopes.subscribe`` lets ``app`` subscribe to ``topic``."""
        scope = self.scopes.subscribe.get(app)
        return scope is None or topic.startswith(RESERVED_PREFIX) or _allowed(topic, scope)

    def topic_key(self, topic: str) -> str | None:
        """The key id new events on ``topic`` are encrypted with, if the topic is encrypted."""
        for pattern, key_id in self._encrypt:
            if fnmatchcase(topic, pattern):
                return key_id
        return None

    def seal(self, topic: str, event: Event) -> Event:
        """The event as this app sends it on ``topic``: encrypted and signed as configured."""
        ext = event.extensions
        if DSSE_MATERIAL in ext:  # already signed by its producer: pass it on unchanged
            return event
        if self._encrypt and KEY_ID not in ext:
            key_id = self.topic_key(topic)
            if key_id is not None:
                event = self.encrypt(event, key_id)
        if self._sign is None:
            return event
        if not self.may_publish(self.app_id, topic):
            raise ScopeError(f"{self.app_id} may not publish to {topic!r} (security.scopes.publish)")
        return self.sign(event)

    def sign(self, event: Event) -> Event:
        """The event with ``signedextattrs`` and ``dssematerial`` (every extension but the unsigned ones)."""
        assert self._sign is not None
        ext = dict(event.extensions)
        ext.pop(SIGNED_EXTENSIONS, None)
        names = dsse.signable(ext, UNSIGNED_EXTENSIONS)
        if names:
            ext[SIGNED_EXTENSIONS] = ",".join(names)
        material = dsse.digest(event, names)
        sig = self._sign(dsse.pae(dsse.PAYLOAD_TYPE, material))
        ext[DSSE_MATERIAL] = dsse.envelope(material, [(self._key_id, sig)])
        return _with(event, ext)

    def encrypt(self, event: Event, key_id: str) -> Event:
        """The event with its data sealed by AES-GCM under ``key_id``."""
        nonce = os.urandom(12)
        sealed = nonce + self._aes[key_id].encrypt(nonce, encode_data(event), _aad(event))
        ext = dict(event.extensions)
        ext[KEY_ID] = key_id
        if event.datacontenttype is not None:
            ext[CRYPT_CONTENT_TYPE] = event.datacontenttype
        return _with(event, ext, data=sealed, datacontenttype=OCTETS)

    # -- receiving -----------------------------------------------------------------------------

    def _verify(self, key_id: str, message: bytes, sig: bytes) -> bool | None:
        trusted = self._trusted.get(key_id)
        return None if trusted is None else trusted[1](message, sig)

    def open(self, topic: str, event: Event) -> tuple[Event, str | None]:
        """``(what the handler sees, the verified sender)`` or :class:`~mesh.security.dsse.Rejected`."""
        sender: str | None = None
        view = event
        if event.extensions.get(DSSE_MATERIAL):
            key_id, names = dsse.check(event, self._verify)
            sender = self._trusted[key_id][0]
            if event.source != f"/{sender}":
                raise dsse.Rejected("wrong_source", f"signed by {sender!r} with {key_id!r}, source {event.source!r}")
            origin = str(event.extensions.get(TOPIC, topic))  # a dead letter is checked on its first topic
            if not self.may_publish(sender, origin):
                raise dsse.Rejected("scope", f"{sender!r} may not publish to {origin!r}")
            view = dsse.verified_view(event, names)
        elif self.require_signed:
            raise dsse.Rejected("unsigned")
        if KEY_ID in view.extensions:
            view = self.decrypt(view)
        elif self._encrypt and not topic.startswith(RESERVED_PREFIX) and self.topic_key(topic) is not None:
            raise dsse.Rejected("plaintext", topic)
        return view, sender

    def decrypt(self, event: Event) -> Event:
        """The event with its data opened (``meshkeyid`` and ``cryptdatacontenttype`` removed)."""
        ext = dict(event.extensions)
        key_id = str(ext.pop(KEY_ID))
        aes = self._aes.get(key_id)
        if aes is None:
            raise dsse.Rejected("unknown_encryption_key", key_id)
        ctype = ext.pop(CRYPT_CONTENT_TYPE, None)
        content_type = None if ctype is None else str(ctype)
        body = encode_data(event)
        try:
            plain = aes.decrypt(body[:12], body[12:], _aad(event))
        except Exception:  # cryptography's InvalidTag, or a body too short to hold a nonce
            raise dsse.Rejected("undecryptable", key_id) from None
        try:
            data = decode_data(plain, content_type)
        except MeshError:
            raise dsse.Rejected("undecryptable", f"{key_id}: the plain data is not {content_type}") from None
        opened = _with(event, ext, data=data, datacontenttype=content_type)
        opened._body = (data, plain)
        return opened

    def count(self, code: str) -> None:
        """Count one rejection."""
        self.rejected[code] += 1

    def __repr__(self) -> str:
        return (
            f"Security({self.app_id!r}, signing={self._key_id or None!r}, trusted={sorted(self._trusted)!r}, "
            f"encryption={sorted(self._aes)!r})"
        )


def _aad(event: Event) -> bytes:
    return f"{event.id}\n{event.source}".encode()


def _aes(text: str, where: str) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigError(
            [(where, "encryption needs the 'cryptography' package: pip install 'event-mesh[security]'")]
        ) from None
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) not in (16, 24, 32):
        raise ConfigError([(where, "an AES key must be the base64 of 16, 24 or 32 bytes")])
    return AESGCM(raw)
