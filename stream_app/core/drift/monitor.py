"""DriftMonitor: the embedding-outlier and category-mix detectors fed the same observations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from stream_app.core.drift.alerts import CategoryMixAlert, EmbeddingDriftAlert
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.outlier_window import (
    DEFAULT_ALPHA,
    DEFAULT_RETRAIN_AFTER,
    DEFAULT_WINDOW,
    OutlierRateDetector,
)
from stream_app.core.drift.window import utc_now


class DriftMonitor:
    """Feeds every observation to both detectors; ``update(obs)`` returns the alerts it raised.

    ``category`` may be None (no reference category mix available).
    """

    def __init__(self, outlier: OutlierRateDetector, category: CategoryMixDetector | None = None) -> None:
        self.outlier = outlier
        self.category = category

    def update(self, obs: Observation) -> list[EmbeddingDriftAlert | CategoryMixAlert]:
        alerts: list[EmbeddingDriftAlert | CategoryMixAlert] = []
        if (alert := self.outlier.update(obs)) is not None:
            alerts.append(alert)
        if self.category is not None and (mix := self.category.update(obs)) is not None:
            alerts.append(mix)
        return alerts

    @classmethod
    def from_calibration(
        cls,
        calibration: Any,
        labels: Sequence[str],
        model_version: str,
        window: int = DEFAULT_WINDOW,
        alpha: float = DEFAULT_ALPHA,
        category_alpha: float = DEFAULT_CATEGORY_ALPHA,
        retrain_after: int = DEFAULT_RETRAIN_AFTER,
        sample_size: int = 10,
        clock: Callable[[], datetime] = utc_now,
    ) -> DriftMonitor:
        """Build both detectors from the bundle's ``DriftCalibration`` (duck-typed).

        Uses ``calibration.quantile`` (p0 = 1 - quantile), ``calibration.centroid_share`` and
        ``calibration.category_share`` (aligned with ``labels``). An empty ``category_share`` disables
        the category-mix detector; a length mismatch raises ``ValueError``.
        """
        quantile = float(calibration.quantile)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"calibration.quantile must be in (0, 1), got {quantile}")
        outlier = OutlierRateDetector(
            window_size=window,
            expected_rate=1.0 - quantile,
            alpha=alpha,
            retrain_after=retrain_after,
            reference_centroid_share=list(getattr(calibration, "centroid_share", []) or []),
            model_version=model_version,
            sample_size=sample_size,
            clock=clock,
        )
        shares = list(getattr(calibration, "category_share", []) or [])
        category = None
        if shares:
            category = CategoryMixDetector(
                window_size=window,
                reference_share=shares,
                labels=labels,
                alpha=category_alpha,
                retrain_after=retrain_after,
                model_version=model_version,
                clock=clock,
            )
        return cls(outlier, category)
