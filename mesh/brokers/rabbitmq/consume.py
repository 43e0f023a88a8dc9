"""Consuming a queue with aiormq's ``basic_consume``, under aio-pika's robust channel.

aio-pika's own consumer wraps every message in an ``IncomingMessage`` (two dozen attribute
writes) and starts a task for it on top of the one aiormq starts: about 15% of a consumer's
CPU here. :class:`RawConsumer` hands aiormq's ``DeliveredMessage`` straight to the callback and
keeps what made aio-pika's consumer robust:

===========================  ==============================================================
event                        what happens
===========================  ==============================================================
reconnection                 the robust channel declares the queue and its bindings again
                             (they were declared through it), then ``reopen_callbacks``
                             call :meth:`RawConsumer._reopened`: consume again
broker cancels the consumer  (its queue was deleted) the queue is declared and bound again
                             (``RobustQueue.restore``), then consumed again
stop                         ``basic_cancel``, bounded by ``stop_timeout``
===========================  ==============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aio_pika.abc import AbstractRobustChannel, AbstractRobustQueue
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

__all__ = ["RawConsumer"]

log = logging.getLogger("mesh.broker.rabbitmq")


class RawConsumer:
    """One consumer of ``queue`` on the channel under ``channel``, started again when needed."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: AbstractRobustQueue,
        callback: Callable[[DeliveredMessage], Coroutine[Any, Any, Any]],
        *,
        no_ack: bool = False,
        timeout: float | None = None,
        stop_timeout: float = 5.0,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag: str | None = None
        self.underlay: AbstractChannel | None = None
        self._callback = callback
        self._no_ack = no_ack
        self._timeout = timeout
        self._stop_timeout = stop_timeout
        self._running = False

    async def start(self) -> None:
        """Consume now, and again after every reconnection until :meth:`stop`."""
        self._running = True
        self.channel.reopen_callbacks.add(self._reopened)
        await self._consume()

    async def _consume(self) -> None:
        if not self._running:
            return
        underlay = await self.channel.get_underlay_channel()
        if self.underlay is not underlay:
            self.underlay = underlay
            underlay.on_consumer_cancel_callbacks.add(self._cancelled)
        ok = await underlay.basic_consume(
            self.queue.name, self._callback, no_ack=self._no_ack, timeout=self._timeout
        )
        self.tag = ok.consumer_tag

    async def _reopened(self, _channel: object) -> None:
        try:
            await self._consume()
        except Exception:  # the channel's callbacks swallow errors: say it here
            log.warning("could not consume %s again after a reconnection", self.queue.name, exc_info=True)

    def _cancelled(self, frame: Basic.Cancel) -> None:
        if self._running and frame.consumer_tag == self.tag:
            self.tag = None
            asyncio.get_running_loop().create_task(self._again(), name=f"mesh-rabbitmq:{self.queue.name}:again")

    async def _again(self) -> None:
        try:
            await self.queue.restore()  # declared and bound again (a server-named queue gets a new name)
            await self._consume()
        except Exception:
            log.warning("the consumer of %s was cancelled and could not start again", self.queue.name, exc_info=True)

    async def stop(self, gone: tuple[type[BaseException], ...] = ()) -> None:
        """Cancel the consumer (bounded: while the connection is down the client would wait)."""
        self._running = False
        self.channel.reopen_callbacks.discard(self._reopened)
        tag, underlay = self.tag, self.underlay
        if tag is not None and underlay is not None and not underlay.is_closed:
            with contextlib.suppress(TimeoutError, *gone):
                async with asyncio.timeout(self._stop_timeout):
                    await underlay.basic_cancel(tag)
