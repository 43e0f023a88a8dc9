"""CloudEvents codecs: pure functions per content mode and per protocol binding.

Structured JSON (:mod:`mesh.codecs.structured`), binary headers (:mod:`mesh.codecs.binary`),
and one :class:`~mesh.codecs.binary.Binding` per broker protocol (:mod:`mesh.codecs.bindings`).
No module here imports a broker client.
"""

from __future__ import annotations

from mesh.codecs.binary import (
    LEGACY_TYPE,
    Binding,
    WireMessage,
    decode,
    encode,
    from_binary,
    to_binary,
    to_structured_message,
    wrap_legacy,
)
from mesh.codecs.structured import CONTENT_TYPE, from_dict, from_structured, to_dict, to_structured

__all__ = [
    "CONTENT_TYPE",
    "LEGACY_TYPE",
    "Binding",
    "WireMessage",
    "decode",
    "encode",
    "from_binary",
    "from_dict",
    "from_structured",
    "to_binary",
    "to_dict",
    "to_structured",
    "to_structured_message",
    "wrap_legacy",
]
