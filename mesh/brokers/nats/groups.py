"""Replay capability of the core NATS adapter: delivering to one group only.

Core NATS keeps nothing, so there is no history (replays read the archive). A group is a queue
group; every member of it also subscribes, in the same queue group, to the side subject
``_mesh.group.<group>.<subject>``, which nobody else does. A replayed event is sent there as a
request: the member that takes it answers at once (before handling it), so the sender knows it
reached a running member, and "no responders" means none is running (core NATS could only drop
it). :func:`has_group` asks the same with an empty probe that members answer and drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from mesh.brokers.base import RESERVED_PREFIX
from mesh.brokers.nats.common import safe_name, to_headers
from mesh.codecs.binary import encode
from mesh.errors import BrokerError, PublishError
from mesh.event import Event

if TYPE_CHECKING:
    from mesh.brokers.nats.core import NatsBroker

__all__ = ["PROBE_HEADER", "has_group", "publish_to_group", "side_subject"]

PROBE_HEADER = "Mesh-Probe"
"""A request with this header asks whether a member listens; it is answered and dropped."""


def side_subject(broker: NatsBroker, topic: str, queue: str) -> str:
    """The subject only the members of queue group ``queue`` of ``topic`` subscribe to."""
    return broker.name_of(f"{RESERVED_PREFIX}group.{safe_name(queue)}.{topic}")


def _queue(group: str) -> str:
    return "_".join(group.split()) or "_"


async def has_group(broker: NatsBroker, topic: str, group: str) -> bool:
    """Whether a member of the group is running (it answers a probe on the side subject)."""
    nc = broker._client()
    try:
        await nc.request(
            side_subject(broker, topic, _queue(group)),
            b"",
            timeout=broker.settings.connect_timeout,
            headers={PROBE_HEADER: "1"},
        )
    except NoRespondersError:
        return False
    except (NatsTimeout, TimeoutError) as exc:
        raise BrokerError(f"nats at {broker.address}: group {group!r} of {topic!r} did not answer a probe") from exc
    except NatsError as exc:
        raise BrokerError(f"nats at {broker.address}: cannot probe group {group!r}: {exc!r}") from exc
    return True


async def publish_to_group(broker: NatsBroker, topic: str, group: str, event: Event) -> None:
    """Hand the event to one running member of the group; returns once that member has it."""
    wire = encode(event, broker.wire)
    subject = side_subject(broker, topic, _queue(group))
    try:
        await broker._client(PublishError).request(
            subject, wire.body, timeout=broker.settings.connect_timeout, headers=to_headers(wire)
        )
    except NoRespondersError as exc:
        raise PublishError(
            f"nats at {broker.address}: no member of group {group!r} of {topic!r} is running "
            "(core NATS keeps nothing for a group that is not)"
        ) from exc
    except (NatsError, TimeoutError) as exc:
        raise PublishError(
            f"nats at {broker.address}: group {group!r} of {topic!r} did not take the event: {exc!r}"
        ) from exc
