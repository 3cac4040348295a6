"""Per-worker drift and DLQ-ratio windows around the detectors of `stream_app.core.drift`.

Contract: `observe` feeds one prediction to the `DriftMonitor` (in consumption order) and returns the
alerts to publish as (key = alert type, JSON value, type). `count_input` counts every consumed
message (dead-lettered or not) into a window of ``STREAM_DRIFT_WINDOW`` messages; at the end of each
window the DLQ share is set on ``stream_dlq_ratio`` and logged loudly above ``STREAM_DLQ_ALERT_RATIO``;
the outlier share of the last window of predictions goes to ``stream_outlier_ratio``.

Windows belong to this worker and cover whatever partitions it holds; a rebalance does not reset
them (see docs/worker.md).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

from stream_app import metrics
from stream_app.core.bundle import Bundle
from stream_app.core.drift import DriftMonitor, Observation
from stream_app.messages import ProductEvent
from stream_app.settings import Settings

log = logging.getLogger(__name__)


class _Monitor(Protocol):
    def update(self, observation: Observation) -> list[Any]: ...


class DriftTracker:
    def __init__(self, monitor: _Monitor, window: int, dlq_alert_ratio: float) -> None:
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
        monitor = DriftMonitor.from_calibration(
            manifest.drift,
            list(manifest.labels),
            bundle.version,
            window=settings.drift_window,
            alpha=settings.drift_alpha,
            category_alpha=settings.category_mix_alpha,
            retrain_after=settings.drift_retrain_after,
        )
        return cls(monitor, settings.drift_window, settings.dlq_alert_ratio)

    def observe(
        self, prediction: Any, event: ProductEvent, partition: int, offset: int, processed_at: datetime
    ) -> list[tuple[bytes, bytes, str, str]]:
        drift = prediction.drift
        observation = Observation(
            product_id=str(event.product_id),
            distance=float(drift.distance),
            nearest_centroid=int(drift.nearest_centroid),
            outlier=bool(drift.outlier),
            top_index=int(prediction.top_index),
            partition=partition,
            offset=offset,
            event_time=event.event_time,
            processed_at=processed_at,
        )
        self._predictions += 1
        self._outliers += int(observation.outlier)
        if self._predictions >= self._window:
            metrics.OUTLIER_RATIO.set(self._outliers / self._predictions)
            self._predictions = self._outliers = 0
        alerts = []
        for alert in self._monitor.update(observation):
            kind = str(alert.type)
            log.warning("drift alert %s: %s", kind, alert.model_dump_json(exclude={"window"})[:500])
            alerts.append((kind.encode("utf-8"), alert.model_dump_json().encode("utf-8"), kind, str(alert.recommendation)))
        return alerts

    def count_input(self, dead_letter: bool) -> None:
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
