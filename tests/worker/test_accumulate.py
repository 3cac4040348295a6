"""Batcher: adaptive micro-batches (no wait when the model is idle, full batches under a backlog), bytes bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stream_app.worker.accumulate import Batcher, ByteBudget
from stream_app.worker.record import ConsumedRecord
from tests.worker.fakes import record


class Processor:
    """Stands in for BatchProcessor: a batch 'infers' until released by the test."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.busy = 0
        self.release = asyncio.Event()
        self.on_inference_idle: Any = None
        self.on_batch_done: Any = None

    def inference_idle(self) -> bool:
        return self.busy == 0

    async def submit(self, records: Sequence[ConsumedRecord]) -> None:
        self.batches.append([r.offset for r in records])
        self.busy += 1
        asyncio.get_running_loop().create_task(self._finish(list(records)))

    async def _finish(self, records: list[ConsumedRecord]) -> None:
        await self.release.wait()
        self.busy -= 1
        if self.busy == 0:
            self.on_inference_idle()
        self.on_batch_done(records)


def test_light_load_does_not_wait_and_a_backlog_fills_batches() -> None:
    async def scenario() -> list[list[int]]:
        processor = Processor()
        batcher = Batcher(processor, max_messages=4, max_bytes=1_000_000)  # type: ignore[arg-type]
        await batcher.add(record(0))
        assert processor.batches == [[0]], "an idle model must get the first message at once"
        for offset in range(1, 10):  # the model is busy: these accumulate
            await batcher.add(record(offset))
        assert processor.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
        processor.release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        return processor.batches

    assert asyncio.run(scenario()) == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_bytes_held_are_bounded_and_an_oversized_record_still_passes() -> None:
    async def scenario() -> None:
        budget = ByteBudget(limit=1_000)
        await budget.acquire(5_000)  # alone: larger than the budget, still admitted
        waiting = asyncio.create_task(budget.acquire(10))
        await asyncio.sleep(0.01)
        assert not waiting.done() and budget.held == 5_000
        budget.release(5_000)
        await asyncio.wait_for(waiting, 1)
        assert budget.held == 10

    asyncio.run(scenario())


def test_the_batcher_stops_taking_while_over_its_byte_budget() -> None:
    async def scenario() -> None:
        processor = Processor()
        batcher = Batcher(processor, max_messages=100, max_bytes=3_000)  # type: ignore[arg-type]
        big = b'{"product_id": 1, "title": "' + b"x" * 1_000 + b'"}'
        for offset in range(2):
            await batcher.add(record(offset, big))
        third = asyncio.create_task(batcher.add(record(2, big)))
        await asyncio.sleep(0.01)
        assert not third.done(), "took a record past the byte budget"
        assert batcher.budget.held <= 3_000
        processor.release.set()
        await asyncio.wait_for(third, 1)

    asyncio.run(scenario())
