"""The RabbitMQ adapter (aio-pika, AMQP 0-9-1): options, ephemeral destinations, group delivery,
history of readable topics (stream queues), the broker.

Imports inside the package go one way: ``options`` <- ``connection`` <- parts <- ``broker``.
Nothing here is imported until a RabbitMQ broker is configured.
"""
