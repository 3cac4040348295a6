"""The take step: consumed records -> micro-batches, adaptive in size, bounded in messages and bytes.

Contract of `Batcher`:
* ``await add(record)`` is called once per consumed record, in consumption order. It returns once
  the record is held; it waits (backpressure: the agent stops taking, Faust's buffer fills, fetching
  pauses) while the bytes held by the worker would exceed ``max_bytes``: records accumulating here
  plus every batch not yet finished. A single record larger than the whole budget is still taken
  when nothing else is held, so no message can block the stream.
* Batches leave in the order the records came. A batch leaves when it holds ``max_messages``
  records, or as soon as the model is idle (no batch waits for or runs a model call), after at most
  ``linger`` seconds: under light load a message does not wait for a batch to fill; under a backlog
  the model is always busy and batches fill up to ``max_messages``.
* Bytes are released when the processor finishes a batch (acked or failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stream_app.worker.batching import BatchProcessor
from stream_app.worker.record import ConsumedRecord


class ByteBudget:
    """Bytes held, bounded by ``limit``; one acquirer at a time (the agent)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = asyncio.Event()

    async def acquire(self, size: int) -> None:
        while self.held > 0 and self.held + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size
        self._freed.set()


class Batcher:
    def __init__(self, processor: BatchProcessor, max_messages: int, max_bytes: int, linger: float = 0.0) -> None:
        self._processor = processor
        self._max_messages = max_messages
        self._linger = linger
        self.budget = ByteBudget(max_bytes)
        self._pending: list[ConsumedRecord] = []
        self._submitting = asyncio.Lock()  # FIFO: batches are submitted in the order they were cut
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        processor.on_inference_idle = self._on_idle
        processor.on_batch_done = self._release

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def add(self, record: ConsumedRecord) -> None:
        await self.budget.acquire(record.size)
        self._pending.append(record)
        if len(self._pending) >= self._max_messages:
            await self.flush()
        elif self._processor.inference_idle():
            if self._linger <= 0:
                await self.flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._linger, self._on_idle)

    async def flush(self) -> None:
        """Submit what is pending as one batch (waits for a free slot)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        async with self._submitting:
            # Shielded: records cut into a batch must reach the processor even if the agent is
            # cancelled meanwhile, or Faust's wait_empty would wait for acks that never come.
            await asyncio.shield(self._processor.submit(batch))

    def _on_idle(self) -> None:
        self._timer = None
        if self._pending:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    def _release(self, records: Sequence[ConsumedRecord]) -> None:
        self.budget.release(sum(r.size for r in records))
