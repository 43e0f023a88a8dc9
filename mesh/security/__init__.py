"""Security: signed events (CloudEvents verifiability), verified identity, scopes, secrets, encryption.

=====================  ======================================================================
module                 what
=====================  ======================================================================
``dsse``               the extension's digest, DSSE envelope and checks (pure)
``keys``               Ed25519 / ECDSA P-256 keys from config text (``cryptography``)
``guard``              :class:`Security`: seal what an app sends, open what it receives
``secrets``            ``app.secrets``: the secrets API over the configured stores
this module            the hook points the invocation path calls (:func:`seal`,
                       :func:`open_reply`, :func:`caller_identity`)
=====================  ======================================================================

The ``signing`` plugin builds one :class:`Security` per app (``runtime.plugin_state["signing"]``)
from ``security:`` and adds the publish and handler layers; requests and replies bypass those
layers, so the invocation path calls the functions here, which do nothing when it is off.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mesh.security.dsse import CODES, Rejected

if TYPE_CHECKING:
    from mesh.event import Event
    from mesh.runtime import Runtime
    from mesh.security.guard import Security
    from mesh.types import Context

__all__ = ["CODES", "REJECTED", "STATE", "VERIFIED", "Rejected", "caller_identity", "open_reply", "seal", "security_of"]

log = logging.getLogger("mesh.security")

STATE = "signing"
"""The ``plugin_state`` name of an app's :class:`~mesh.security.guard.Security`."""
VERIFIED = "security.verified"
"""``ctx.state`` key: identity was checked for this delivery (``ctx.sender`` is meaningful)."""
REJECTED = "security.rejected"
"""``ctx.state`` key on an invocation request that failed verification: why (answered ``PermissionDenied``)."""


def security_of(runtime: Runtime) -> Security | None:
    """The app's security settings at work, when the signing plugin runs."""
    found: Security | None = runtime.plugin_state.get(STATE)
    return found


def seal(runtime: Runtime, topic: str, event: Event) -> Event:
    """An outgoing request or reply, encrypted and signed as configured (unchanged when off)."""
    security = security_of(runtime)
    return event if security is None else security.seal(topic, event)


def open_reply(runtime: Runtime, topic: str, event: Event) -> tuple[Event, str | None]:
    """``(reply as verified, None)`` or ``(reply, why it is rejected)``; counted and logged."""
    security = security_of(runtime)
    if security is None or not security.checking:
        return event, None
    try:
        view, _ = security.open(topic, event)
    except Rejected as exc:
        security.count(exc.code)
        log.warning("rejected a reply from %s (id %s): %s", event.source, event.id, exc)
        return event, str(exc)
    return view, None


def caller_identity(ctx: Context, claimed: str) -> tuple[str, str | None]:
    """The caller access rules act on, and why the request was rejected (``None``: it was not).

    With signing on this is the verified signer (``""`` for an unsigned request); otherwise the
    ``source`` the request claims.
    """
    if not ctx.state.get(VERIFIED):
        return claimed, None
    return ctx.sender or "", ctx.state.get(REJECTED)
