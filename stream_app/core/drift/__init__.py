"""Windowed drift detectors (pure: no Kafka, no asyncio).

One detector per module, one API: ``detector.update(observation) -> alert | None`` over tumbling
windows; ``DriftMonitor.update(observation) -> list[alert]`` runs both.

* ``OutlierRateDetector`` (outlier_window): binomial test of the share of embeddings beyond tau.
* ``CategoryMixDetector`` (category_mix): chi-square test of the predicted top-category mix.
* Alerts (alerts): ``EmbeddingDriftAlert``, ``CategoryMixAlert``: the ``drift`` topic messages.
"""

from stream_app.core.drift.alerts import (
    AlertWindow,
    CategoryCount,
    CategoryMixAlert,
    DriftAlert,
    EmbeddingDriftAlert,
    MovedCentroid,
    PartitionRange,
)
from stream_app.core.drift.binomial import critical_count, tail_probability
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.false_alarms import simulate_false_alarm_rate, simulate_false_alarms
from stream_app.core.drift.monitor import DriftMonitor
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.outlier_window import DEFAULT_ALPHA, DEFAULT_WINDOW, OutlierRateDetector

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CATEGORY_ALPHA",
    "DEFAULT_WINDOW",
    "AlertWindow",
    "CategoryCount",
    "CategoryMixAlert",
    "CategoryMixDetector",
    "DriftAlert",
    "DriftMonitor",
    "EmbeddingDriftAlert",
    "MovedCentroid",
    "Observation",
    "OutlierRateDetector",
    "PartitionRange",
    "critical_count",
    "simulate_false_alarm_rate",
    "simulate_false_alarms",
    "tail_probability",
]
