"""Micro-batch processing with at-least-once delivery. No Faust here: the adapter hands in `Record`s.

Contract of `BatchProcessor.submit(records)`:
* It takes ownership of the records. Each record's ``ack()`` is called exactly once, and only after
  every output of that record (its ``categories`` message or its dead letter) and every drift alert
  its window raised were acknowledged by the broker. A record whose outputs fail is never acked, so
  its offset is never committed: the worker stops (``on_fatal``) and the message is redelivered.
* It returns as soon as the batch is scheduled; at most ``max_in_flight`` batches are pending (the
  call waits for a free slot, which stops the agent from taking more: that is the backpressure).
* Model calls run on ``executor`` (one model call per batch). If the batch call fails, its
  messages are retried one by one and only the failing ones are dead-lettered.
* Outputs are *sent* in batch order (batch k+1 starts sending after batch k has sent), so outputs
  of one partition keep the input order and the drift windows see messages in consumption order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stream_app import metrics
from stream_app.messages import CategorizedProduct, CategoryOut, DriftOut, ProductEvent, SourceRef
from stream_app.worker.dead_letters import Rejected, Valid, classify, dead_letter, inference_failure

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Record:
    """One consumed message, as the adapter sees it. ``ack`` marks it safe to commit."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None  # broker timestamp, seconds since the epoch
    ack: Callable[[], Any]


class Publisher(Protocol):
    """Sends one message; the returned awaitable resolves when the broker acknowledged it."""

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]: ...


class PredictionLike(Protocol):
    categories: Sequence[Any]
    top_index: int
    drift: Any

    @property
    def top_category(self) -> str: ...


class DriftSink(Protocol):
    """Per-message drift bookkeeping; returns the alerts (JSON-ready) to publish with their key."""

    def observe(
        self, prediction: PredictionLike, event: ProductEvent, partition: int, offset: int, processed_at: datetime
    ) -> list[tuple[bytes, bytes, str, str]]: ...  # (key, value, alert type, recommendation)

    def count_input(self, dead_letter: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Topics:
    output: str
    drift: str
    dlq: str


@dataclass
class Progress:
    """What liveness needs: when the loop last moved, and how many records are held."""

    last_progress: float = field(default_factory=time.monotonic)
    pending_records: int = 0
    batches_in_flight: int = 0

    def touch(self) -> None:
        self.last_progress = time.monotonic()


class BatchProcessor:
    def __init__(
        self,
        *,
        predict: Callable[[list[str]], Sequence[PredictionLike]],
        render: Callable[[dict[str, Any]], str],
        model_version: str,
        publisher: Publisher,
        topics: Topics,
        drift: DriftSink,
        executor: Executor,
        max_in_flight: int,
        max_message_bytes: int,
        on_fatal: Callable[[BaseException], Awaitable[None]],
        progress: Progress | None = None,
    ) -> None:
        self._predict = predict
        self._render = render
        self._model_version = model_version
        self._publisher = publisher
        self._topics = topics
        self._drift = drift
        self._executor = executor
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_bytes = max_message_bytes
        self._on_fatal = on_fatal
        self.progress = progress or Progress()
        self._previous_sent: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- entry points ------------------------------------------------------------------------------

    async def submit(self, records: Sequence[Record]) -> None:
        """Schedule one batch (see module docstring). Waits while max_in_flight batches are pending."""
        if not records:
            return
        self.progress.pending_records += len(records)
        self.progress.touch()
        metrics.MESSAGES_CONSUMED.inc(len(records))
        metrics.BATCH_SIZE.observe(len(records))
        await self._slots.acquire()
        self.progress.batches_in_flight += 1
        metrics.BATCHES_IN_FLIGHT.set(self.progress.batches_in_flight)
        loop = asyncio.get_running_loop()
        previous, sent = self._previous_sent, loop.create_future()
        self._previous_sent = sent
        task = loop.create_task(self._process(list(records), previous, sent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every scheduled batch to finish (used at shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- one batch ---------------------------------------------------------------------------------

    async def _process(
        self, records: list[Record], previous: asyncio.Future[None] | None, sent: asyncio.Future[None]
    ) -> None:
        try:
            outcomes = [classify(r.value, self._max_bytes) for r in records]
            valid = [(i, o.event) for i, o in enumerate(outcomes) if isinstance(o, Valid)]
            predictions: dict[int, PredictionLike | Rejected] = {}
            if valid:
                texts = [self._render(event.text_fields()) for _, event in valid]
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, texts)
                for (i, _), result in zip(valid, results, strict=True):
                    predictions[i] = result
            if previous is not None:
                await asyncio.shield(previous)  # keep send order across batches
            acks = await self._send_all(records, outcomes, predictions)
            sent.set_result(None)
            await asyncio.gather(*acks)
        except asyncio.CancelledError:
            if not sent.done():
                sent.set_result(None)
            raise
        except Exception as exc:  # noqa: BLE001 - anything here means outputs are not safe
            if not sent.done():
                sent.set_result(None)
            log.exception("batch of %d records failed to publish; not acking, stopping the worker", len(records))
            await self._on_fatal(exc)
            return
        else:
            for record in records:
                record.ack()
        finally:
            self.progress.pending_records -= len(records)
            self.progress.batches_in_flight -= 1
            metrics.BATCHES_IN_FLIGHT.set(self.progress.batches_in_flight)
            self.progress.touch()
            self._slots.release()

    def _infer(self, texts: list[str]) -> list[PredictionLike | Rejected]:
        """Runs on the executor: one model call; on failure, one call per text."""
        started = time.perf_counter()
        try:
            predictions = list(self._predict(texts))
            if len(predictions) != len(texts):
                raise RuntimeError(f"model returned {len(predictions)} predictions for {len(texts)} texts")
            return list(predictions)
        except Exception as exc:  # noqa: BLE001 - isolate the poison message below
            log.warning("batch inference failed (%r); retrying %d messages one by one", exc, len(texts))
            results: list[PredictionLike | Rejected] = []
            for text in texts:
                try:
                    (one,) = self._predict([text])
                    results.append(one)
                except Exception as single_exc:  # noqa: BLE001
                    results.append(inference_failure(single_exc))
            return results
        finally:
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)

    async def _send_all(
        self,
        records: list[Record],
        outcomes: list[Valid | Rejected],
        predictions: dict[int, PredictionLike | Rejected],
    ) -> list[Awaitable[None]]:
        """Start every send of the batch, in record order; return the acknowledgement awaitables."""
        acks: list[Awaitable[None]] = []
        for i, (record, outcome) in enumerate(zip(records, outcomes, strict=True)):
            result: PredictionLike | Rejected = outcome if isinstance(outcome, Rejected) else predictions[i]
            if isinstance(result, Rejected):
                acks.append(await self._send_dead_letter(record, result))
                continue
            assert isinstance(outcome, Valid)
            try:
                payload = self._categorized(record, outcome.event, result)
            except Exception as exc:  # noqa: BLE001 - e.g. NaN scores: a per-message failure
                acks.append(await self._send_dead_letter(record, inference_failure(exc)))
                continue
            acks.append(await self._send(self._topics.output, outcome.event.key, payload,
                                         event_time=outcome.event.event_time, record=record))
            self._drift.count_input(dead_letter=False)
            alerts = self._drift.observe(result, outcome.event, record.partition, record.offset, datetime.now(UTC))
            for key, value, alert_type, recommendation in alerts:
                acks.append(await self._send(self._topics.drift, key, value))
                metrics.DRIFT_ALERTS.labels(type=alert_type, recommendation=recommendation).inc()
        return acks

    def _categorized(self, record: Record, event: ProductEvent, prediction: PredictionLike) -> bytes:
        drift = prediction.drift
        message = CategorizedProduct(
            product_id=event.product_id,
            categories=[CategoryOut(name=c.name, score=float(c.score)) for c in prediction.categories],
            top_category=prediction.top_category,
            model_version=self._model_version,
            drift=DriftOut(distance=float(drift.distance), nearest_centroid=int(drift.nearest_centroid),
                           outlier=bool(drift.outlier)),
            event_time=event.event_time,
            processed_at=datetime.now(UTC),
            source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
        )
        metrics.DRIFT_DISTANCE.observe(float(drift.distance))
        return message.model_dump_json().encode("utf-8")

    async def _send_dead_letter(self, record: Record, rejected: Rejected) -> Awaitable[None]:
        letter = dead_letter(record.key, record.value, rejected, record.topic, record.partition, record.offset)
        metrics.DEAD_LETTERS.labels(reason=rejected.reason.value).inc()
        self._drift.count_input(dead_letter=True)
        log.info(
            "dead letter %s:%d@%d reason=%s %s",
            record.topic, record.partition, record.offset, rejected.reason.value, rejected.detail[:200],
        )
        return await self._send(self._topics.dlq, record.key, letter.model_dump_json().encode("utf-8"))

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        event_time: datetime | None = None,
        record: Record | None = None,
    ) -> Awaitable[None]:
        """Hand one message to the producer now (keeps order); return an awaitable of its broker ack."""
        future = await self._publisher.send(topic, key, value)

        async def acknowledged() -> None:
            await future
            metrics.MESSAGES_PRODUCED.labels(topic=topic).inc()
            if record is not None:
                origin = event_time.timestamp() if event_time is not None else record.timestamp
                if origin is not None:
                    metrics.END_TO_END_LATENCY.observe(max(0.0, time.time() - origin))

        return acknowledged()
