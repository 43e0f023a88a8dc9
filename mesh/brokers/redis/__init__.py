"""The Redis Streams adapter (redis-py asyncio): options, consumer script, ephemeral streams, history, the broker.

Imports inside the package go one way: ``options`` <- ``connection`` <- parts <- ``broker``.
Nothing here is imported until a Redis broker is configured.
"""
