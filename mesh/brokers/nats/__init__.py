"""The NATS adapters (nats-py): core NATS (``type: nats``) and JetStream (``type: jetstream``).

They share the options, the connection and the ephemeral destinations. Imports inside the package
go one way, each module importing only modules above it in this list:

==================  ============================================================================
module              what
==================  ============================================================================
``options``         the settings of both types
``messages``        pure: headers out, events in, safe names, the slow-consumer backlog
``fastclient``      nats-py's client, guarded, and the faster one on its internals
``connection``      :class:`~.connection.NatsConnection`: the client and what every part needs
``streams``         JetStream streams and durable consumers, storing
``ephemeral``       requests, replies, presence (core NATS, both types)
``groups``          core NATS: delivery to one group (side subject)
``history``         JetStream: history and delivery to one group
``consumer``        core NATS: a queue subscription per member, in-process redelivery
``pull``            JetStream: a pull subscription per member
``broker``          what both brokers compose
``core``            :class:`~.core.NatsBroker`
``jetstream``       :class:`~.jetstream.JetStreamBroker`
==================  ============================================================================

Nothing here is imported until a NATS broker is configured.
"""
