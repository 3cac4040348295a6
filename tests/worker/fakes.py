"""Fakes for unit tests of one step of the batch path (the real chain runs in the broker tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

from stream_app.core.decoding import CategoryScore
from stream_app.core.pipeline import DriftScore, Prediction
from stream_app.messages import ProductEvent
from stream_app.worker.record import ConsumedRecord


def settled_future(error: BaseException | None = None, result: object = "metadata") -> asyncio.Future[Any]:
    """A future already resolved the way a producer's delivery future resolves: ``error`` or ``result``."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


def prediction(name: str = "Bebê", score: float = 0.9) -> Prediction:
    return Prediction([CategoryScore(name, score, True)], 0, DriftScore(0.1, 0, False))


def record(offset: int, value: bytes | None = None, *, partition: int = 0, key: bytes | None = None,
           acked: list[tuple[int, int]] | None = None) -> ConsumedRecord:
    body = value if value is not None else json.dumps({"product_id": offset, "title": f"Caneca {offset}"}).encode()

    def ack() -> None:
        if acked is not None:
            acked.append((partition, offset))

    return ConsumedRecord(key=key if key is not None else str(offset).encode(), value=body, topic="in",
                          partition=partition, offset=offset, timestamp=None, ack=ack)


class Publisher:
    """Records every send; deliveries resolve at once unless ``gate`` (an asyncio.Event) holds them."""

    def __init__(self, gate: asyncio.Event | None = None, fail: BaseException | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.gate = gate
        self.fail = fail

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[object]:
        self.sent.append((topic, key, value))
        gate, fail = self.gate, self.fail

        async def delivered() -> None:
            if gate is not None:
                await gate.wait()
            if fail is not None:
                raise fail

        return delivered()


class NoDrift:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool]] = []

    def observe(self, partition: int, offset: int, processed_at: datetime,
                prediction: Prediction | None = None, event: ProductEvent | None = None) -> Sequence[Any]:
        self.seen.append((partition, offset, prediction is not None))
        return []
