"""`ShadowScorer`: which messages it shadows, how it batches them for the candidate, what it publishes."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from stream_app import metrics
from stream_app.core.decoding import CategoryScore
from stream_app.core.pipeline import DriftScore, Prediction
from stream_app.worker.record import ConsumedRecord
from stream_app.worker.shadow import ShadowScorer, shadowed


def prediction(top: str, distance: float = 0.2, outlier: bool = False) -> Prediction:
    return Prediction([CategoryScore(top, 0.9, True)], 0, DriftScore(distance, 0, outlier))


class Candidate:
    """A shadow model stand-in: records every call's texts; predicts ``top`` (or raises ``fail``)."""

    def __init__(self, top: str = "A", fail: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.top, self.fail = top, fail
        self.version = "candidate"

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls.append(list(texts))
        if self.fail is not None:
            raise self.fail
        return [prediction(self.top, distance=0.5, outlier=True) for _ in texts]


def items(offsets: range, top: str = "A") -> list[tuple[ConsumedRecord, str, Prediction]]:
    return [(ConsumedRecord(b"k", b"{}", "products", 0, o, 1.7e9, lambda: None), f"text {o}", prediction(top))
            for o in offsets]


def scorer(candidate: Candidate, sent: list[tuple[bytes, bytes]], *, share: float = 1.0, window: int = 1000,
           batch: int = 8, max_wait_s: float = 60.0) -> tuple[ShadowScorer, ThreadPoolExecutor]:
    async def send(key: bytes, value: bytes) -> None:
        sent.append((key, value))

    executor = ThreadPoolExecutor(1)
    model: Any = candidate  # duck-typed ServingModel: the scorer reads .predict and .version
    return ShadowScorer(model, share, window, executor, send, "w1", batch=batch, max_wait_s=max_wait_s), executor


def test_texts_are_buffered_into_calls_of_batch_size_in_arrival_order() -> None:
    candidate, sent = Candidate(), []

    async def run() -> None:
        shadow, executor = scorer(candidate, sent, batch=8)
        shadow.offer(items(range(0, 3)), "v1")
        shadow.offer(items(range(3, 6)), "v1")
        await asyncio.sleep(0.05)
        assert candidate.calls == []  # 6 < 8 buffered, the wait has not expired
        shadow.offer(items(range(6, 10)), "v1")
        await shadow.drain()
        executor.shutdown()

    asyncio.run(run())
    assert candidate.calls == [[f"text {o}" for o in range(8)], ["text 8", "text 9"]]


def test_a_partial_buffer_is_scored_after_the_wait() -> None:
    candidate, sent = Candidate(), []

    async def run() -> None:
        shadow, executor = scorer(candidate, sent, batch=100, max_wait_s=0.05)
        shadow.offer(items(range(3)), "v1")
        await asyncio.sleep(0.5)  # no drain: the timer alone must flush
        assert candidate.calls == [["text 0", "text 1", "text 2"]]
        await shadow.drain()
        executor.shutdown()

    asyncio.run(run())
    assert len(candidate.calls) == 1


def test_a_new_serving_version_closes_the_buffer() -> None:
    candidate, sent = Candidate(), []

    async def run() -> None:
        shadow, executor = scorer(candidate, sent, batch=100)
        shadow.offer(items(range(2)), "v1")
        shadow.offer(items(range(2, 3)), "v2")
        await shadow.drain()
        executor.shutdown()

    asyncio.run(run())
    assert candidate.calls == [["text 0", "text 1"], ["text 2"]]


def test_window_summary_compares_both_models_on_the_same_messages() -> None:
    candidate, sent = Candidate(top="A"), []

    async def run() -> None:
        shadow, executor = scorer(candidate, sent, window=10, batch=5)
        shadow.offer(items(range(0, 6), top="A") + items(range(6, 10), top="B"), "v1")
        await shadow.drain()
        executor.shutdown()

    asyncio.run(run())
    assert len(sent) == 1
    key, value = sent[0]
    summary = json.loads(value)
    assert key == b"candidate" and summary["messages"] == 10 and summary["serving_version"] == "v1"
    assert summary["top1_agreement"] == pytest.approx(0.6)
    assert summary["disagreements"] == [{"serving": "B", "shadow": "A", "count": 4}]
    assert summary["shadow_drift"] == {"mean_distance": pytest.approx(0.5), "outlier_share": 1.0}
    assert summary["serving_drift"] == {"mean_distance": pytest.approx(0.2), "outlier_share": 0.0}


def test_a_failing_candidate_is_counted_and_never_raises() -> None:
    candidate, sent = Candidate(fail=RuntimeError("broken graph")), []
    before = metrics.REGISTRY.get_sample_value("stream_shadow_failures_total") or 0.0

    async def run() -> None:
        shadow, executor = scorer(candidate, sent, batch=2)
        shadow.offer(items(range(4)), "v1")
        await shadow.drain()
        executor.shutdown()

    asyncio.run(run())
    assert len(candidate.calls) == 2 and sent == []
    assert metrics.REGISTRY.get_sample_value("stream_shadow_failures_total") - before == 2


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 1.0])
def test_the_shadowed_share_is_stable_and_close_to_the_setting(share: float) -> None:
    n = 20_000
    picked = [shadowed(p, o, share) for p in range(4) for o in range(n // 4)]
    assert picked == [shadowed(p, o, share) for p in range(4) for o in range(n // 4)]  # a replay picks the same
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(sum(picked) - n * share) <= 5 * sigma
