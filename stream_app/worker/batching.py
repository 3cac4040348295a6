"""The batch path: validate -> infer -> publish -> commit, for micro-batches, at least once. No Faust here.

Each step is its own module with its own contract: `dead_letters.classify` (validate),
`inference.Inference` (infer), `outputs.OutputBuilder` + `publish.Publish` (publish) and
`commit.OrderedAcks` (commit). `BatchProcessor` only chains them and bounds what is in flight.

Contract of `BatchProcessor.submit(records)`:
* It takes ownership of the records. A record's ``ack()`` is called once, only after every output
  of that record (its ``categories`` message or its dead letter, and any drift alert it raised) was
  acknowledged by the broker, and only after every record of every earlier batch was acked. After a
  fatal error (a publish that fails, `ModelBroken`) no record is acked any more and ``on_fatal`` is
  called: the worker stops and the unacked messages are redelivered after restart.
* Every input gets exactly one primary output: a ``categories`` record, or a dead letter naming why.
  No input can raise out of the batch (validation is total; an output refused as too large becomes a
  dead letter).
* It waits while ``max_in_flight`` batches are pending (backpressure: the agent stops taking).
* The batch is scored, drift-tracked and labelled by the `ServingModel` that serves when the batch
  is submitted; `swap(model)` changes it from the next submitted batch on (a hot swap between
  micro-batches: no batch is scored half by each version, and per partition the outputs'
  ``model_version`` switches once, in offset order).
* Outputs are handed to the producer in batch order, so one partition's outputs keep its input
  order, and the drift tracker sees messages in consumption order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stream_app import metrics
from stream_app.core.pipeline import Prediction
from stream_app.worker.commit import AckTurn, OrderedAcks
from stream_app.worker.dead_letters import Rejected, Valid, classify, inference_failure
from stream_app.worker.outputs import Output, OutputBuilder
from stream_app.worker.publish import Publish
from stream_app.worker.record import ConsumedRecord
from stream_app.worker.serving import ServingModel
from stream_app.worker.shadow import ShadowScorer

log = logging.getLogger(__name__)


@dataclass
class BatchProgress:
    """What liveness and the batcher need: when the loop last moved, what is held."""

    last_progress: float = field(default_factory=time.monotonic)
    pending_records: int = 0
    batches_in_flight: int = 0

    def touch(self) -> None:
        self.last_progress = time.monotonic()


class BatchProcessor:
    def __init__(
        self,
        *,
        model: ServingModel,
        outputs: OutputBuilder,
        publish: Publish,
        max_in_flight: int,
        max_message_bytes: int,
        on_fatal: Callable[[BaseException], Awaitable[None]],
        progress: BatchProgress | None = None,
    ) -> None:
        self.model = model
        self._outputs = outputs
        self._publish = publish
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_bytes = max_message_bytes
        self._on_fatal = on_fatal
        self.progress = progress or BatchProgress()
        self._acks = OrderedAcks()
        self._previous_sent: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._before_inference = 0  # batches submitted whose model call has not finished
        self.shadow: ShadowScorer | None = None  # a candidate scoring a share of the messages, off the path
        self.on_inference_idle: Callable[[], None] | None = None
        self.on_batch_done: Callable[[Sequence[ConsumedRecord]], None] | None = None

    @property
    def failed(self) -> bool:
        return self._acks.failed

    def swap(self, model: ServingModel) -> None:
        """Serve ``model`` from the next submitted batch on (batches already taken keep theirs)."""
        self.model = model

    def inference_idle(self) -> bool:
        """True when no submitted batch waits for or runs a model call."""
        return self._before_inference == 0

    # -- entry points ------------------------------------------------------------------------------

    async def submit(self, records: Sequence[ConsumedRecord]) -> None:
        """Schedule one batch (see module docstring). Waits while max_in_flight batches are pending."""
        if not records:
            return
        batch = list(records)
        self._before_inference += 1
        self.progress.pending_records += len(batch)
        self.progress.touch()
        metrics.MESSAGES_CONSUMED.inc(len(batch))
        metrics.BATCH_SIZE.observe(len(batch))
        await self._slots.acquire()
        self.progress.batches_in_flight += 1
        metrics.BATCHES_IN_FLIGHT.set(self.progress.batches_in_flight)
        loop = asyncio.get_running_loop()
        previous, sent = self._previous_sent, loop.create_future()
        self._previous_sent = sent
        task = loop.create_task(self._process(batch, self.model, previous, sent, self._acks.turn()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every scheduled batch to finish (used at shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- one batch ---------------------------------------------------------------------------------

    async def _process(
        self, records: list[ConsumedRecord], model: ServingModel, previous: asyncio.Future[None] | None,
        sent: asyncio.Future[None], turn: AckTurn,
    ) -> None:
        try:
            outcomes, results, texts = await self._validate_and_infer(records, model)
            if self.shadow is not None:
                self.shadow.offer([(records[i], texts[i], p) for i, p in results.items() if isinstance(p, Prediction)],
                                  model.version)
            if previous is not None:
                await asyncio.shield(previous)  # keep send order across batches
            deliveries = [await self._publish.send(r, self._outputs_of(model, r, o, results.get(i)))
                          for i, (r, o) in enumerate(zip(records, outcomes, strict=True))]
            sent.set_result(None)
            for delivery in deliveries:
                await delivery
            await turn.ack(records)
        except asyncio.CancelledError:
            turn.fail()
            raise
        except Exception as exc:  # anything here means outputs are not safe
            turn.fail()
            log.exception("batch of %d records failed; not acking, stopping the worker", len(records))
            await self._on_fatal(exc)
        finally:
            if not sent.done():
                sent.set_result(None)
            self.progress.pending_records -= len(records)
            self.progress.batches_in_flight -= 1
            metrics.BATCHES_IN_FLIGHT.set(self.progress.batches_in_flight)
            self.progress.touch()
            self._slots.release()
            if self.on_batch_done is not None:
                self.on_batch_done(records)

    async def _validate_and_infer(
        self, records: list[ConsumedRecord], model: ServingModel
    ) -> tuple[list[Valid | Rejected], dict[int, Prediction | Rejected], dict[int, str]]:
        """Outcome per record; prediction and rendered text per valid record's index."""
        try:
            outcomes = [classify(r.value, self._max_bytes) for r in records]
            texts = {i: model.render(o.event.text_fields()) for i, o in enumerate(outcomes) if isinstance(o, Valid)}
            predictions = await model.inference(list(texts.values()))
            return outcomes, dict(zip(texts, predictions, strict=True)), texts
        finally:
            self._before_inference -= 1
            if self._before_inference == 0 and self.on_inference_idle is not None:
                self.on_inference_idle()

    def _outputs_of(
        self, model: ServingModel, record: ConsumedRecord, outcome: Valid | Rejected,
        result: Prediction | Rejected | None,
    ) -> list[Output]:
        """The record's primary output, then the drift alerts it raised (consumption order)."""
        processed_at = datetime.now(UTC)
        event = outcome.event if isinstance(outcome, Valid) else None
        prediction = result if isinstance(result, Prediction) else None
        primary: Output
        if isinstance(outcome, Rejected):
            primary = self._outputs.dead_letter(record, outcome)
        elif isinstance(result, Rejected):
            primary = self._outputs.dead_letter(record, result)
        else:
            try:
                assert event is not None and prediction is not None
                primary = self._outputs.categorized(record, event, prediction, model.version)
            except Exception as exc:  # noqa: BLE001 - e.g. NaN scores: this message's failure
                primary, prediction = self._outputs.dead_letter(record, inference_failure(exc)), None
        outputs = [primary]
        for alert in model.drift.observe(record.partition, record.offset, processed_at, prediction,
                                         event if prediction is not None else None):
            outputs.append(Output(self._outputs.topics.drift, alert.key, alert.value, f"alert:{alert.type}"))
            metrics.DRIFT_ALERTS.labels(type=alert.type, recommendation=alert.recommendation).inc()
        return outputs
