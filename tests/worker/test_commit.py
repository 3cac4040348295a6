"""OrderedAcks: records are acked in the order batches were taken, and never after a failure."""

from __future__ import annotations

import asyncio

from stream_app.worker.commit import OrderedAcks
from tests.worker.fakes import record


def test_a_later_batch_waits_for_the_earlier_one() -> None:
    async def scenario() -> list[tuple[int, int]]:
        acked: list[tuple[int, int]] = []
        acks = OrderedAcks()
        first, second = acks.turn(), acks.turn()
        later = asyncio.create_task(second.ack([record(2, acked=acked), record(3, acked=acked)]))
        await asyncio.sleep(0.01)
        assert acked == [], "batch 2 was acked while batch 1 was still open"
        assert await first.ack([record(0, acked=acked), record(1, acked=acked)])
        assert await later
        return acked

    assert asyncio.run(scenario()) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_nothing_is_acked_after_a_failure() -> None:
    async def scenario() -> tuple[list[tuple[int, int]], bool, bool]:
        acked: list[tuple[int, int]] = []
        acks = OrderedAcks()
        first, second, third = acks.turn(), acks.turn(), acks.turn()
        later = asyncio.create_task(second.ack([record(5, acked=acked)]))
        first.fail()
        return acked, await later, await third.ack([record(6, acked=acked)])

    acked, second_ok, third_ok = asyncio.run(scenario())
    assert acked == [] and not second_ok and not third_ok
