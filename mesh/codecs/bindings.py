"""The protocol binding of each broker (DESIGN §3): the header prefix written and those read.

=========  ==============  ===========================================  ==========================
broker     writes          also reads                                   content type slot
=========  ==============  ===========================================  ==========================
Kafka      ``ce_<attr>``   structured                                   ``content-type`` header
AMQP       ``ce-<attr>``   ``cloudEvents_<attr>``, ``cloudEvents:<attr>``  ``content_type`` property
NATS       ``ce-<attr>``   structured                                   ``content-type`` header
Redis      ``ce_<attr>``   one ``event`` field holding structured JSON  ``content-type`` field
=========  ==============  ===========================================  ==========================
"""

from __future__ import annotations

from mesh.codecs.binary import Binding

__all__ = ["AMQP", "KAFKA", "NATS", "REDIS", "for_broker"]

KAFKA = Binding(write_prefix="ce_")
AMQP = Binding(write_prefix="ce-", read_prefixes=("cloudevents_", "cloudevents:"))
NATS = Binding(write_prefix="ce-")
REDIS = Binding(write_prefix="ce_")

_BY_BROKER = {"kafka": KAFKA, "rabbitmq": AMQP, "nats": NATS, "jetstream": NATS, "redis": REDIS}


def for_broker(broker: str, content_mode: str = "binary") -> Binding:
    """The binding a broker type uses, in the given content mode."""
    base = _BY_BROKER[broker]
    if content_mode == base.content_mode:
        return base
    key = (broker, content_mode)
    if key not in _VARIANTS:
        _VARIANTS[key] = Binding(base.write_prefix, base.read_prefixes, content_mode)
    return _VARIANTS[key]


_VARIANTS: dict[tuple[str, str], Binding] = {}
