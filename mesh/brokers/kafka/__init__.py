"""The Kafka adapter (aiokafka): options, consumer, ephemeral destinations, history, the broker.

Imports inside the package go one way: ``options`` <- ``connection`` <- parts <- ``broker``.
Nothing here is imported until a Kafka broker is configured.
"""
