"""The Faust side of the worker's I/O: the consumer's fetch limits and the producer the outputs go to.

`FaustPublisher` is the `Publisher` the publish step sends through (below). The rest of this module is
Faust's aiokafka transport with the fetch limits as settings (Faust hard-codes or omits them).

Faust builds the aiokafka consumer itself, with ``fetch_max_wait_ms=1500`` fixed and aiokafka's default
``fetch_max_bytes`` (50 MB). The first is latency (Tansu holds a fetch that long even when data has
arrived), the second is memory. `WorkerApp` registers a transport whose consumer thread sets both
from `FetchLimits` on the aiokafka consumer it created, before that consumer starts.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiokafka
import faust
from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import ProducerT, TransportT

from stream_app.worker.publish import RecordTooLarge


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_wait_ms: int
    max_bytes: int


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        if not isinstance(app, WorkerApp):
            raise TypeError(f"{type(self).__name__} needs a WorkerApp (it reads fetch_limits), got {type(app)}")
        limits = app.fetch_limits
        # aiokafka reads these two attributes when it starts its fetcher; no public setter exists and
        # Faust passes no way to set them. Fail loudly if an upgrade renames them.
        for name in ("_fetch_max_wait_ms", "_fetch_max_bytes"):
            if not hasattr(consumer, name):
                raise RuntimeError(f"aiokafka consumer has no {name}: check stream_app/worker/transport.py")
        consumer._fetch_max_wait_ms = limits.max_wait_ms  # noqa: SLF001 - aiokafka has no setter (above)
        consumer._fetch_max_bytes = limits.max_bytes  # noqa: SLF001 - aiokafka has no setter (above)
        return consumer


class _Consumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(Transport):
    Consumer = _Consumer


class WorkerApp(faust.App):
    """A Faust app whose consumer honours `FetchLimits`."""

    def __init__(self, *args: Any, fetch_limits: FetchLimits, **kwargs: Any) -> None:
        self.fetch_limits = fetch_limits
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


class FaustPublisher:
    """`Publisher` over Faust topics: ``send`` returns the future of the broker acknowledgement.

    aiokafka's `MessageSizeTooLargeError` (raised by the producer's own size check, which Faust wraps
    in `ProducerSendError`, or returned by the broker) becomes `RecordTooLarge`, which the publish
    step turns into a dead letter. Every other error propagates: the worker stops without acking.

    With ``app``, records go straight to the app's producer (`faust.transport.drivers.aiokafka.Producer.send`,
    the call `Topic.send` ends in, with the same errors and the same acknowledgement future), skipping
    `Topic.send`'s per-record sensors and its yield to the event loop: without that yield the outputs of
    a batch reach the producer's accumulator together and leave in a few produce requests instead of
    about one per record (docs/benchmarks.md, profile).
    """

    def __init__(self, topics: dict[str, faust.TopicT], app: faust.App | None = None) -> None:
        self._topics = topics
        self._app = app
        self._producer: ProducerT | None = None

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[object]:
        try:
            if self._app is not None:
                if self._producer is None:
                    self._producer = await self._app.maybe_start_producer()
                future = await self._producer.send(topic, key, value, None, None, None)
            else:
                # force=True: never attach to the current event (stream_publish_on_commit); we await the ack.
                future = await self._topics[topic].send(key=key, value=value, force=True)
        except (MessageSizeTooLargeError, ProducerSendError) as exc:
            too_large = exc if isinstance(exc, MessageSizeTooLargeError) else exc.__cause__
            if not isinstance(too_large, MessageSizeTooLargeError):
                raise
            raise RecordTooLarge(str(too_large)) from exc
        return self._acknowledged(future)

    @staticmethod
    async def _acknowledged(future: Awaitable[object]) -> object:
        try:
            return await future
        except MessageSizeTooLargeError as exc:
            raise RecordTooLarge(str(exc)) from exc
