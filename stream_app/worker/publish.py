"""The publish step: hand a record's outputs to the producer in order; know when all were acknowledged.

Contract of `Publish.send(record, outputs)`:
* Awaiting it hands every output to the producer, in the given order, before it returns: so outputs
  of consecutive calls keep the call order (per partition, the input order).
* It returns one awaitable that resolves when the broker acknowledged every output of the record,
  and raises if any cannot be delivered: the caller must then not acknowledge the record.
* An output refused as too large (`RecordTooLarge`, raised by the producer's own size check or by
  the broker) is not a reason to stop: it is replaced by a small dead letter (reason
  ``output_too_large``, copies cut to `REFUSED_LETTER_BYTES`). Only if that letter is refused too does
  the error propagate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from stream_app import metrics
from stream_app.worker.outputs import Output
from stream_app.worker.record import ConsumedRecord

# A dead letter of this size fits any broker's limit that a sane deployment sets.
REFUSED_LETTER_BYTES = 16_384


class RecordTooLarge(Exception):
    """The producer or the broker refused one record as too large (never retriable)."""


class Publisher(Protocol):
    """Sends one record: awaiting ``send`` hands it to the producer (order is kept from then on) and
    returns an awaitable that resolves when the broker acknowledged it. Both may raise `RecordTooLarge`."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[object]: ...


Replace = Callable[[ConsumedRecord, Output, BaseException, int], Output]


class Publish:
    def __init__(self, publisher: Publisher, replace: Replace) -> None:
        self._publisher = publisher
        self._replace = replace

    async def send(self, record: ConsumedRecord, outputs: Sequence[Output]) -> Awaitable[None]:
        acks = [await self._send(record, output) for output in outputs]

        async def all_acknowledged() -> None:
            for ack in acks:
                await ack

        return all_acknowledged()

    async def _send(self, record: ConsumedRecord, output: Output, replaced: bool = False) -> Awaitable[None]:
        try:
            delivery = await self._publisher.send(output.topic, output.key, output.value)
        except RecordTooLarge as exc:
            if replaced:
                raise
            return await self._send(record, self._replace(record, output, exc, REFUSED_LETTER_BYTES), True)

        async def acknowledged() -> None:
            try:
                await delivery
            except RecordTooLarge as exc:
                if replaced:
                    raise
                replacement = self._replace(record, output, exc, REFUSED_LETTER_BYTES)
                await (await self._send(record, replacement, True))
                return
            metrics.MESSAGES_PRODUCED.labels(topic=output.topic).inc()
            if output.origin is not None:
                metrics.END_TO_END_LATENCY.observe(max(0.0, time.time() - output.origin))

        return acknowledged()
