"""The CloudEvents a store emits and the extension names it writes (for :mod:`mesh.extensions`).

=======================  =================================================================
type / extension         meaning
=======================  =================================================================
``mesh.state.changed``   a key was set: data ``{"key", "etag", "value"}`` (value unless
                         ``changes_data: false``); ``subject`` is the key
``mesh.state.deleted``   a key was deleted: data ``{"key", "etag"}``
``meshstore``            the store's configured name
``meshetag``              the key's ETag after the change
``partitionkey``         the key, so brokers keep one key's changes in order
=======================  =================================================================
"""

from __future__ import annotations

from mesh import extensions as ext

__all__ = ["CHANGED", "DELETED", "EXT_ETAG", "EXT_STORE", "INTERNAL_PREFIX"]

CHANGED = "mesh.state.changed"
DELETED = "mesh.state.deleted"
EXT_STORE = ext.STATE_STORE
EXT_ETAG = ext.STATE_ETAG
INTERNAL_PREFIX = "__mesh"
"""Keys the block keeps for itself (relay leases), outside every app's prefix."""
