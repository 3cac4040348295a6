"""The commit step: acknowledge input records strictly in the order their batches were taken.

Why it exists: Faust commits, per partition, the highest offset below which every message is acked,
but its check for a gap right after the committed offset is off by one (faust-streaming #606) and is
skipped while the committed offset is unknown (a new group, and during every rebalance). So an ack
of batch k+1 while batch k is still publishing, or after batch k failed, can be committed past
batch k: silent loss. Acking in order closes that door whatever Faust does with gaps.

Contract of `OrderedAcks`:
* `turn()` is called when a batch is taken (in consumption order) and returns its `AckTurn`.
* ``await turn.ack(records)`` waits until every earlier batch was acknowledged (or failed), then
  calls each record's ``ack()`` in the order given, unless any batch has failed: after a failure no
  record is ever acknowledged again (the worker is stopping; the messages will be redelivered).
* ``turn.fail()`` marks the failure and lets later turns proceed to their (refused) acks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stream_app.worker.record import ConsumedRecord


class AckTurn:
    def __init__(self, owner: OrderedAcks, previous: asyncio.Future[None] | None, done: asyncio.Future[None]) -> None:
        self._owner = owner
        self._previous = previous
        self._done = done

    async def ack(self, records: Sequence[ConsumedRecord]) -> bool:
        """Ack ``records`` once every earlier batch is settled; False (nothing acked) after a failure."""
        try:
            if self._previous is not None:
                await asyncio.shield(self._previous)
            if self._owner.failed:
                return False
            for record in records:
                record.ack()
            return True
        finally:
            self._settle()

    def fail(self) -> None:
        self._owner.failed = True
        self._settle()

    def _settle(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


class OrderedAcks:
    def __init__(self) -> None:
        self.failed = False
        self._last: asyncio.Future[None] | None = None

    def turn(self) -> AckTurn:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turn = AckTurn(self, self._last, done)
        self._last = done
        return turn
