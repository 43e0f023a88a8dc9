"""Placement: which instance owns an actor, by rendezvous (highest-random-weight) hashing.

Every instance computes the same answer from the same set of live hosts (presence heartbeats
list the actor types each instance hosts): the host with the highest ``hash(host, type, id)``.
When a host joins, only the actors for which it now scores highest move to it (its fair share);
when one leaves, only its actors move, each to its second-best host. No placement service.

Pure functions: no broker, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["owner", "score"]


def score(host: str, actor_type: str, actor_id: str) -> int:
    """The weight of ``host`` for one actor (64 bits of BLAKE2b)."""
    digest = hashlib.blake2b(f"{host}\x00{actor_type}\x00{actor_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(hosts: Iterable[str], actor_type: str, actor_id: str) -> str | None:
    """The host that owns the actor (``None`` when there is no host)."""
    best: str | None = None
    best_score = -1
    for host in hosts:
        s = score(host, actor_type, actor_id)
        if s > best_score or (s == best_score and best is not None and host < best):
            best, best_score = host, s
    return best


