"""The protocol bindings the brokers use: the header prefix written and those read.

Named after the CloudEvents protocol binding, not the broker: a broker's registry entry
(:class:`~mesh.components.BrokerInfo`) and its adapter class name the binding they use.

=========  ==============  ===========================================  ==========================
binding    writes          also reads                                   content type slot
=========  ==============  ===========================================  ==========================
KAFKA      ``ce_<attr>``   structured                                   ``content-type`` header
AMQP       ``ce-<attr>``   ``cloudEvents_<attr>``, ``cloudEvents:<attr>``  ``content_type`` property
NATS       ``ce-<attr>``   structured                                   ``content-type`` header
REDIS      ``ce_<attr>``   one ``event`` field holding structured JSON  ``content-type`` field
=========  ==============  ===========================================  ==========================

``binding.in_mode("structured")`` is the same binding writing structured events.
"""

from __future__ import annotations

from mesh.codecs.binary import Binding

__all__ = ["AMQP", "KAFKA", "NATS", "REDIS"]

KAFKA = Binding(write_prefix="ce_")
AMQP = Binding(write_prefix="ce-", read_prefixes=("cloudevents_", "cloudevents:"))
NATS = Binding(write_prefix="ce-")
REDIS = Binding(write_prefix="ce_")
