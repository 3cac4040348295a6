"""Faust's aiokafka transport with the fetch limits as settings (Faust hard-codes or omits them).

Faust builds the aiokafka consumer itself, with ``fetch_max_wait_ms=1500`` fixed and aiokafka's default
``fetch_max_bytes`` (50 MB). The first is latency (Tansu holds a fetch that long even when data has
arrived), the second is memory. `WorkerApp` registers a transport whose consumer thread sets both
from `FetchLimits` on the aiokafka consumer it created, before that consumer starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TransportT


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
