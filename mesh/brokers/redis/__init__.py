"""The Redis Streams adapter (redis-py asyncio): options, connection, consumer, ephemeral, history, groups, broker.

Imports inside the package go one way: ``options`` and ``script`` (the Lua source, imports
nothing) <- ``connection`` <- parts (``consumer``, ``ephemeral``, ``history``, ``groups``; they
never import each other) <- ``broker``. Nothing here is imported until a Redis broker is configured.
"""
