"""Replay capability of the core NATS adapter: delivering to one group only.

Core NATS keeps nothing, so there is no history (replays read the archive). A group is a queue
group; every member of it also subscribes, in the same queue group, to the side subject
``_mesh.group.<group>.<subject>``, which nobody else does. A replayed event is sent there as a
request: the member that takes it answers at once (before handling it), so the sender knows it
reached a running member, and "no responders" means none is running (core NATS could only drop
it). :meth:`NatsGroups.has_group` asks the same with an empty probe that members answer and drop.
"""

from __future__ import annotations

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from mesh.brokers.base import RESERVED_PREFIX
from mesh.brokers.nats.connection import NatsConnection
from mesh.brokers.nats.messages import queue_group, safe_name, to_headers
from mesh.codecs.binary import encode
from mesh.errors import BrokerError, PublishError
from mesh.event import Event

__all__ = ["PROBE_HEADER", "NatsGroups", "side_subject"]

PROBE_HEADER = "Mesh-Probe"
"""A request with this header asks whether a member listens; it is answered and dropped."""


def side_subject(conn: NatsConnection, topic: str, queue: str) -> str:
    """The subject only the members of queue group ``queue`` of ``topic`` subscribe to."""
    return conn.name_of(f"{RESERVED_PREFIX}group.{safe_name(queue)}.{topic}")


class NatsGroups:
    """Delivery to one group of a core NATS connection (a :class:`~mesh.brokers.capabilities.GroupPublisher`)."""

    def __init__(self, conn: NatsConnection) -> None:
        self.conn = conn

    async def has_group(self, topic: str, group: str) -> bool:
        """Whether a member of the group is running (it answers a probe on the side subject)."""
        conn = self.conn
        nc = conn.client()
        try:
            await nc.request(
                side_subject(conn, topic, queue_group(group)),
                b"",
                timeout=conn.settings.connect_timeout,
                headers={PROBE_HEADER: "1"},
            )
        except NoRespondersError:
            return False
        except (NatsTimeout, TimeoutError) as exc:
            raise BrokerError(f"nats at {conn.address}: group {group!r} of {topic!r} did not answer a probe") from exc
        except NatsError as exc:
            raise BrokerError(f"nats at {conn.address}: cannot probe group {group!r}: {exc!r}") from exc
        return True

    async def publish_to_group(self, topic: str, group: str, event: Event) -> None:
        """Hand the event to one running member of the group; returns once that member has it."""
        conn = self.conn
        wire = encode(event, conn.wire)
        subject = side_subject(conn, topic, queue_group(group))
        try:
            await conn.client(PublishError).request(
                subject, wire.body, timeout=conn.settings.connect_timeout, headers=to_headers(wire)
            )
        except NoRespondersError as exc:
            raise PublishError(
                f"nats at {conn.address}: no member of group {group!r} of {topic!r} is running "
                "(core NATS keeps nothing for a group that is not)"
            ) from exc
        except (NatsError, TimeoutError) as exc:
            raise PublishError(
                f"nats at {conn.address}: group {group!r} of {topic!r} did not take the event: {exc!r}"
            ) from exc
