"""The worker's drift bookkeeping around `stream_app.core.drift`: records to publish, and two gauges.

Contract of `DriftTracker.observe(partition, offset, processed_at, prediction, event)`: call it once
per consumed input message, in consumption order (``prediction``/``event`` None for a dead letter).
It feeds the `DriftMonitor` (windows aligned to offsets, per input partition: window k covers
offsets ``[k*W, (k+1)*W)``, W = ``STREAM_DRIFT_WINDOW``; see `stream_app.core.drift.monitor`), whose
detectors decide and whose `RecordBuilder` (``stream_app.core.drift.records``) writes the records of
their decisions in this worker's `AlertContext` (model version, group, input topic, worker id), and
returns the `AlertRecord`s to publish on the ``drift`` topic, in order: firing alerts (as soon as a
window's drift is decided, at most one per window and type) and ``resolved`` records (the first
clean window of a (partition, type) after an alert). Each record's ``alert_id`` is a hash of the
window (input topic, partition, offsets), the type, the model version and the consumer group, so a
record re-sent after a crash and replay has the same id (see `stream_app.core.drift.alerts.alert_id`).
The monitor also runs the sequential test (``embedding_drift_sequential``: Bernoulli CUSUMs of the
outlier flag and of a nearer distance cut, `stream_app.core.drift.cusum`), whose id hashes the run of evidence
``[run_start_offset, alarm_offset + 1)``: a replay that restarts the statistic at or before the run
start re-sends it with the same id.

Gauges (over this worker's last ``STREAM_DRIFT_WINDOW`` consumed messages, all partitions
together): ``stream_dlq_ratio`` (dead-lettered share, logged as an ERROR above
``STREAM_DLQ_ALERT_RATIO``) and ``stream_outlier_ratio`` (outlier share of the predictions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from stream_app import metrics
from stream_app.core.bundle import Bundle
from stream_app.core.drift import AlertContext, DriftMonitor, DriftRecord, DriftResolved, Observation
from stream_app.messages import ProductEvent
from stream_app.settings import Settings

if TYPE_CHECKING:
    from stream_app.core.pipeline import Prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One record for the ``drift`` topic."""

    key: bytes  # Kafka key: the alert type as UTF-8 (one partition `drift` topic keeps them ordered)
    value: bytes  # the record's JSON (`stream_app.messages.drift_alert_adapter`)
    type: str  # "embedding_drift" | "category_mix" | "embedding_drift_sequential"
    recommendation: str  # "investigate" | "retrain" | "resolved"


class DriftTracker:
    """Per-partition drift windows of one worker, plus the DLQ-ratio and outlier-ratio gauges."""

    def __init__(self, monitor: DriftMonitor, window: int, dlq_alert_ratio: float) -> None:
        self._monitor = monitor
        self._window = window
        self._dlq_alert_ratio = dlq_alert_ratio
        self._inputs = 0
        self._dead = 0
        self._predictions = 0
        self._outliers = 0

    @classmethod
    def for_bundle(cls, bundle: Bundle, settings: Settings) -> DriftTracker:
        manifest = bundle.manifest
        context = AlertContext(
            model_version=bundle.version,
            group_id=settings.group_id,
            topic=settings.input_topic,
            worker_id=settings.worker_id,
        )
        monitor = DriftMonitor.from_calibration(
            manifest.drift,
            list(manifest.labels),
            context,
            window=settings.drift_window,
            alpha=settings.drift_alpha,
            category_alpha=settings.category_mix_alpha,
            retrain_after=settings.drift_retrain_after,
            sequential=True,
        )
        return cls(monitor, settings.drift_window, settings.dlq_alert_ratio)

    def observe(
        self,
        partition: int,
        offset: int,
        processed_at: datetime,
        prediction: Prediction | None = None,
        event: ProductEvent | None = None,
    ) -> list[AlertRecord]:
        """Called once per consumed input message, in consumption order; prediction/event None for a dead letter."""
        if (prediction is None) != (event is None):
            raise ValueError("observe: give both prediction and event, or neither (a dead letter)")
        self._count_input(dead_letter=prediction is None)
        if prediction is None or event is None:
            records = self._monitor.dead_letter(partition, offset, processed_at)
        else:
            drift = prediction.drift
            # Validation turns epoch milliseconds into an aware datetime: the int is the input type only.
            event_time = event.event_time if isinstance(event.event_time, datetime) else None
            observation = Observation(
                product_id=str(event.product_id),
                distance=float(drift.distance),
                nearest_centroid=int(drift.nearest_centroid),
                outlier=bool(drift.outlier),
                top_index=int(prediction.top_index),
                partition=partition,
                offset=offset,
                event_time=event_time,
                processed_at=processed_at,
            )
            self._count_prediction(observation.outlier)
            records = self._monitor.update(observation)
        return [self._record(r) for r in records]

    def _record(self, record: DriftRecord) -> AlertRecord:
        kind = str(record.type)
        window = record.window
        if isinstance(record, DriftResolved):
            recommendation = "resolved"
            log.info("drift resolved %s partition %d window [%d, %d) id %s resolves %s",
                     kind, record.partition, window.start_offset, window.end_offset, record.alert_id,
                     record.resolves)
        else:
            recommendation = str(record.recommendation)
            log.warning("drift alert %s partition %d window [%d, %d) id %s: %s",
                        kind, record.partition, window.start_offset, window.end_offset, record.alert_id,
                        record.model_dump_json(exclude={"window", "thresholds"})[:500])
        return AlertRecord(key=kind.encode("utf-8"), value=record.model_dump_json().encode("utf-8"),
                           type=kind, recommendation=recommendation)

    def _count_prediction(self, outlier: bool) -> None:
        self._predictions += 1
        self._outliers += int(outlier)
        if self._predictions >= self._window:
            metrics.OUTLIER_RATIO.set(self._outliers / self._predictions)
            self._predictions = self._outliers = 0

    def _count_input(self, dead_letter: bool) -> None:
        self._inputs += 1
        self._dead += int(dead_letter)
        if self._inputs >= self._window:
            ratio = self._dead / self._inputs
            metrics.DLQ_RATIO.set(ratio)
            if ratio > self._dlq_alert_ratio:
                log.error(
                    "DEAD-LETTER RATIO %.1f%% over the last %d messages exceeds STREAM_DLQ_ALERT_RATIO=%.1f%%: "
                    "check the producers of the input topic",
                    100 * ratio, self._inputs, 100 * self._dlq_alert_ratio,
                )
            self._inputs = self._dead = 0
