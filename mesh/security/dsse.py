"""The CloudEvents verifiability extension: the digest, the DSSE envelope, signing and checking.

Pure functions over :class:`~mesh.event.Event` (no broker, no App), written from
``cloudevents/spec`` ``cloudevents/extensions/verifiability.md`` and DSSE v1.0.2:

=====================  ==========================================================================
step                   what
=====================  ==========================================================================
digest                 SHA-256 over the SHA-256 of id, source, specversion, type,
                       datacontenttype, dataschema, subject (UTF-8, empty when unset), time
                       (RFC 3339 in UTC, ``Z``), the data bytes, then name and value of each
                       extension listed in ``signedextattrs``, in that order
envelope               ``{"payload": b64(digest), "payloadType": PAYLOAD_TYPE, "signatures":
                       [{"keyid", "sig"}]}``, JSON, then base64: the ``dssematerial`` extension
signature              over DSSE's PAE: ``DSSEv1 <len> <type> <len> <body>``, body the digest
verified view          a new event with the core attributes, the data and exactly the signed
                       extensions (never a mixture of verified and unverified values)
=====================  ==========================================================================

Data bytes are what the mesh's codecs put on the wire (:func:`mesh.codecs.data.encode_data`:
compact JSON for JSON data, the bytes themselves for binary data). Every way an event fails is a
:class:`Rejected` with its own ``code`` (see :data:`CODES`), so dead letters say which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC

from mesh.codecs.data import canonical, encode_data, format_time
from mesh.event import CORE_ATTRIBUTES, Event
from mesh.extensions import DSSE_MATERIAL, SIGNED_EXTENSIONS

__all__ = [
    "CODES",
    "PAYLOAD_TYPE",
    "Rejected",
    "digest",
    "envelope",
    "pae",
    "read_envelope",
    "signed_names",
    "verified_view",
]

PAYLOAD_TYPE = "https://cloudevents.io/verifiability/dsse/v0.1"

CODES: dict[str, str] = {
    "unsigned": "the event carries no dssematerial and signed events are required",
    "not_base64": "dssematerial is not base64",
    "not_envelope": "dssematerial is not a DSSE JSON envelope",
    "payload_type": "the envelope's payloadType is not the verifiability extension's",
    "bad_payload": "the envelope's payload is not a 32-byte digest",
    "unknown_key": "no signature by a key id this app trusts",
    "bad_signature": "the signature does not verify (forged, or made with another key)",
    "bad_signedextattrs": "signedextattrs breaks the extension's rules",
    "tampered": "the event does not match its signed digest (data or a signed attribute changed)",
    "wrong_source": "the event claims a source other than the app that signed it",
    "scope": "the signer may not publish to this topic (security.scopes.publish)",
    "unknown_encryption_key": "the event is encrypted with a key id this app does not have",
    "undecryptable": "the encrypted data does not open with its key (changed, or the wrong key)",
    "plaintext": "the topic is encrypted but the event is not",
}
"""Every rejection code and what it means: the first word of the dead letter's ``mesherror``."""

_FORBIDDEN = CORE_ATTRIBUTES | {DSSE_MATERIAL, SIGNED_EXTENSIONS}
_EMPTY = hashlib.sha256(b"").digest()


class Rejected(Exception):
    """An event that failed verification (or decryption), with its :data:`CODES` code."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {CODES.get(code, code)}{f' ({detail})' if detail else ''}")


def _h(value: str | bytes | None) -> bytes:
    if value is None:
        return _EMPTY
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


def digest(event: Event, signed: Iterable[str] = ()) -> bytes:
    """The verification material of ``event`` with the extensions ``signed`` (32 bytes)."""
    time = format_time(event.time.astimezone(UTC)) if event.time is not None else None
    parts = [
        _h(event.id),
        _h(event.source),
        _h(event.specversion),
        _h(event.type),
        _h(event.datacontenttype),
        _h(event.dataschema),
        _h(event.subject),
        _h(time),
        _h(encode_data(event)),
    ]
    extensions = event.extensions
    for name in signed:
        value = extensions.get(name)
        parts.append(_h(name))
        parts.append(_h(None if value is None else canonical(value)))
    return hashlib.sha256(b"".join(parts)).digest()


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1.0.2 pre-authentication encoding: ``DSSEv1 SP len SP type SP len SP body``."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def envelope(material: bytes, signatures: Iterable[tuple[str, bytes]]) -> str:
    """The ``dssematerial`` value: the DSSE JSON envelope of ``material``, base64."""
    doc = {
        "payload": base64.b64encode(material).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode()} for k, s in signatures],
    }
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def _b64(text: object, code: str, what: str) -> bytes:
    if not isinstance(text, str | bytes):
        raise Rejected(code, f"{what} is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(code, f"{what} is not valid base64") from None


def read_envelope(value: object) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``(material, [(keyid, sig)])`` of a ``dssematerial`` value, or :class:`Rejected`.

    Checks the steps before the signature: base64, JSON, envelope shape, and the payload type
    (the caller checks the signatures, then the payload's length and the digest).
    """
    if isinstance(value, bytes):  # a binding may hand a string attribute over as bytes
        value = value.decode("ascii", "replace")
    if not value:
        raise Rejected("unsigned")
    raw = _b64(value, "not_base64", "dssematerial")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Rejected("not_envelope", "not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list) or "payload" not in doc:
        raise Rejected("not_envelope", "needs payload, payloadType and signatures")
    sigs: list[tuple[str, bytes]] = []
    for item in doc["signatures"]:
        if not isinstance(item, dict) or not isinstance(item.get("keyid", ""), str):
            raise Rejected("not_envelope", "a signature is not {keyid, sig}")
        sigs.append((item.get("keyid", ""), _b64(item.get("sig"), "not_envelope", "a sig")))
    if not sigs:
        raise Rejected("not_envelope", "no signatures")
    if doc.get("payloadType") != PAYLOAD_TYPE:
        raise Rejected("payload_type", repr(doc.get("payloadType"))[:80])
    return _b64(doc["payload"], "not_envelope", "the payload"), sigs


def signed_names(event: Event) -> list[str]:
    """The names in the event's ``signedextattrs``, checked against the extension's rules."""
    value = event.extensions.get(SIGNED_EXTENSIONS)
    if value is None or value == "":
        return []
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    names = text.split(",")
    if len(set(names)) != len(names):
        raise Rejected("bad_signedextattrs", "a name is repeated")
    for name in names:
        if name in _FORBIDDEN:
            raise Rejected("bad_signedextattrs", f"names {name!r}, which may not be signed as an extension")
    return names


def check(
    event: Event,
    verify: Callable[[str, bytes, bytes], bool | None],
) -> tuple[str, list[str]]:
    """Verify ``event``: ``(keyid that verified, signed extension names)`` or :class:`Rejected`.

    ``verify(keyid, message, sig)`` returns ``True`` (good), ``False`` (bad) or ``None`` (the
    key id is not acceptable), following the verification protocol's steps in order.
    """
    material, sigs = read_envelope(event.extensions.get(DSSE_MATERIAL))
    message = pae(PAYLOAD_TYPE, material)
    keyid = None
    known = False
    for kid, sig in sigs:
        ok = verify(kid, message, sig)
        if ok is None:
            continue
        known = True
        if ok:
            keyid = kid
            break
    if keyid is None:
        raise Rejected("bad_signature" if known else "unknown_key", ", ".join(k for k, _ in sigs)[:120])
    if len(material) != 32:
        raise Rejected("bad_payload", f"{len(material)} bytes")
    names = signed_names(event)
    if digest(event, names) != material:
        raise Rejected("tampered")
    return keyid, names


def verified_view(event: Event, names: Iterable[str]) -> Event:
    """A new event with the core attributes, the data and only the signed extensions."""
    ext = event.extensions
    view = Event._trusted(
        event.type,
        event.source,
        event.id,
        event.data,
        event.subject,
        event.time,
        event.datacontenttype,
        event.dataschema,
        {n: ext[n] for n in names if n in ext},
        event.specversion,
    )
    view._body = event._body
    return view


def signable(extensions: Mapping[str, object], unsigned: frozenset[str]) -> list[str]:
    """The extension names a signer covers: all but the verification ones and ``unsigned``."""
    return [n for n in extensions if n not in unsigned and n not in _FORBIDDEN]
