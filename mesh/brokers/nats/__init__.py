"""The NATS adapters (nats-py): core NATS (``type: nats``) and JetStream (``type: jetstream``).

They share the options, the connection and the ephemeral destinations. Imports inside the package
go one way: ``options`` <- ``connection`` <- parts <- ``core`` / ``jetstream``. Nothing here is
imported until a NATS broker is configured.
"""
