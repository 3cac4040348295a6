"""Shadow scoring: a candidate model scores a share of the live messages beside the serving model.

Contract of `ShadowScorer`:
* ``offer(items, serving_version)`` is called by the batch path after the serving model scored a
  batch, with the (record, rendered text, serving prediction) of its valid messages. It picks the
  messages whose (partition, offset) hashes under ``share`` (deterministic: the same messages are
  shadowed on a replay) and buffers them. When ``batch`` texts are buffered, or ``max_wait_s`` after
  the first one was, it schedules one candidate model call for the buffer on the inference executor,
  after the serving calls already queued there. Why buffer: a share of one micro-batch is a few
  dozen texts, which the model runs ~1.5x slower per text than a full window (less padding removed
  by length sorting); scored together, the shadow costs serving about its share. It never waits for
  the call and never touches the serving outputs: nothing the shadow computes reaches
  ``categories``; a shadow failure is logged and counted, never fatal. The buffer holds at most
  ``batch`` texts (each already cut to the model's length), so it bounds the shadow's memory.
* ``drain()`` scores what is buffered and waits for every scheduled call (shutdown).
* Per ``window`` shadowed messages it publishes one summary record on the shadow topic (key: the
  shadow version) and sets the ``stream_shadow_*`` metrics: top-1 agreement with the serving model,
  the category pairs (serving -> shadow) where they disagree most, both models' drift scores on the
  same messages (mean distance, outlier share) and the shadow's cost (model seconds per message).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stream_app import metrics
from stream_app.core.pipeline import Prediction
from stream_app.worker.record import ConsumedRecord
from stream_app.worker.serving import ServingModel

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], Awaitable[None]]


def shadowed(partition: int, offset: int, share: float) -> bool:
    """Whether this message is in the shadowed share (a stable hash of its position)."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{partition}:{offset}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


@dataclass
class ShadowWindow:
    """Running comparison of one window of shadowed messages."""

    count: int = 0
    agree: int = 0
    disagreements: Counter[tuple[str, str]] = field(default_factory=Counter)
    serving_distance: float = 0.0
    shadow_distance: float = 0.0
    serving_outliers: int = 0
    shadow_outliers: int = 0
    seconds: float = 0.0
    first_at: datetime | None = None

    def add(self, serving: Prediction, shadow: Prediction) -> None:
        self.first_at = self.first_at or datetime.now(UTC)
        self.count += 1
        if serving.top_category == shadow.top_category:
            self.agree += 1
        else:
            self.disagreements[(serving.top_category, shadow.top_category)] += 1
        self.serving_distance += serving.drift.distance
        self.shadow_distance += shadow.drift.distance
        self.serving_outliers += int(serving.drift.outlier)
        self.shadow_outliers += int(shadow.drift.outlier)

    def summary(self, serving_version: str, shadow_version: str, worker_id: str) -> dict[str, object]:
        n = max(1, self.count)
        return {
            "type": "shadow_window",
            "serving_version": serving_version,
            "shadow_version": shadow_version,
            "worker_id": worker_id,
            "messages": self.count,
            "top1_agreement": self.agree / n,
            "disagreements": [{"serving": a, "shadow": b, "count": c}
                              for (a, b), c in self.disagreements.most_common(10)],
            "serving_drift": {"mean_distance": self.serving_distance / n, "outlier_share": self.serving_outliers / n},
            "shadow_drift": {"mean_distance": self.shadow_distance / n, "outlier_share": self.shadow_outliers / n},
            "shadow_seconds_per_message": self.seconds / n,
            "first_at": (self.first_at or datetime.now(UTC)).isoformat(),
            "last_at": datetime.now(UTC).isoformat(),
        }


class ShadowScorer:
    def __init__(self, model: ServingModel, share: float, window: int, executor: Executor, send: Send,
                 worker_id: str, batch: int = 256, max_wait_s: float = 2.0) -> None:
        self.model = model
        self._share = share
        self._window_size = window
        self._batch = max(1, batch)
        self._max_wait_s = max_wait_s
        self._pending: list[tuple[str, Prediction]] = []
        self._pending_version = ""
        self._flush_timer: asyncio.TimerHandle | None = None
        self._executor = executor
        self._send = send
        self._worker_id = worker_id
        self._window = ShadowWindow()
        self._serving_version = ""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def version(self) -> str:
        return self.model.version

    def offer(self, items: Sequence[tuple[ConsumedRecord, str, Prediction]], serving_version: str) -> None:
        chosen = [(text, pred) for record, text, pred in items
                  if shadowed(record.partition, record.offset, self._share)]
        if not chosen:
            return
        if self._pending and serving_version != self._pending_version:
            self._flush()  # one serving version per call: the summary names it
        loop = asyncio.get_running_loop()
        self._pending_version = serving_version
        for item in chosen:
            if not self._pending:
                self._flush_timer = loop.call_later(self._max_wait_s, self._flush)
            self._pending.append(item)
            if len(self._pending) >= self._batch:
                self._flush()

    def _flush(self) -> None:
        """Schedule one model call for the buffered texts (no-op when the buffer is empty)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._score(pending, self._pending_version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        self._flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _score(self, chosen: list[tuple[str, Prediction]], serving_version: str) -> None:
        texts = [text for text, _ in chosen]
        predict = self.model.predict
        assert predict is not None

        def timed_predict() -> tuple[Sequence[Prediction], float]:
            # Timed on the inference thread: the cost is the model's, not the wait behind serving batches.
            started = time.perf_counter()
            return predict(texts), time.perf_counter() - started

        try:
            predictions, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, timed_predict)
        except Exception as exc:  # noqa: BLE001 - the shadow never hurts serving
            metrics.SHADOW_FAILURES.inc()
            log.warning("shadow %s failed on %d texts: %r", self.version, len(texts), exc)
            return
        metrics.SHADOW_MESSAGES.inc(len(texts))
        metrics.SHADOW_SECONDS.inc(seconds)
        self._window.seconds += seconds
        self._serving_version = serving_version
        for (_, serving), shadow in zip(chosen, predictions, strict=True):
            self._window.add(serving, shadow)
        if self._window.count >= self._window_size:
            await self._publish()

    async def _publish(self) -> None:
        window, self._window = self._window, ShadowWindow()
        summary = window.summary(self._serving_version, self.version, self._worker_id)
        metrics.SHADOW_AGREEMENT.set(float(summary["top1_agreement"]))  # type: ignore[arg-type]
        log.info("shadow %s vs %s: agreement %.3f over %d messages", self.version, self._serving_version,
                 summary["top1_agreement"], window.count)
        try:
            await self._send(self.version.encode(), json.dumps(summary).encode())
        except Exception as exc:  # noqa: BLE001 - a lost summary is a metric, not an outage
            metrics.SHADOW_FAILURES.inc()
            log.warning("shadow summary not published: %r", exc)
