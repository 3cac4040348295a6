"""Windowed drift detectors (pure: no Kafka, no asyncio).

Windows are aligned to offsets, per input partition: window k of partition p covers offsets
``[k*W, (k+1)*W)`` (``monitor``), so every record names a window that any replay recomputes the
same way, and carries a deterministic ``alert_id`` (``alerts.alert_id``).

* ``DriftMonitor`` (monitor): per partition, lazily, one of each detector; ``update(obs)`` and
  ``dead_letter(partition, offset, processed_at)`` return the records to publish.
* ``OutlierRateDetector`` (outlier_window): binomial test of the share of embeddings beyond tau.
* ``CategoryMixDetector`` (category_mix): chi-square test of the predicted top-category mix.
* ``SequentialOutlierDetector`` (cusum): one-sided Bernoulli CUSUMs across windows of the outlier
  flag (distance > tau) and of a nearer distance cut (``BernoulliCusum``, thresholds from the exact
  run length of ``design_cusum``): alerts ``embedding_drift_sequential`` when the window test is not
  already reporting the partition.
* Records (alerts): ``EmbeddingDriftAlert``, ``CategoryMixAlert``, ``SequentialDriftAlert``
  (``status: firing``) and ``DriftResolved`` (``status: resolved``): the ``drift`` topic messages.
"""

from stream_app.core.drift.alerts import (
    AlertContext,
    AlertWindow,
    CategoryCount,
    CategoryMixAlert,
    CategoryThresholds,
    DriftAlert,
    DriftRecord,
    DriftResolved,
    EmbeddingDriftAlert,
    EmbeddingThresholds,
    MovedCentroid,
    SequentialDriftAlert,
    SequentialThresholds,
    alert_id,
)
from stream_app.core.drift.binomial import critical_count, tail_probability
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.cusum import (
    BernoulliCusum,
    CusumAlarm,
    CusumChannel,
    CusumDesign,
    SequentialOutlierDetector,
    average_run_length,
    default_channels,
    design_cusum,
)
from stream_app.core.drift.false_alarms import simulate_false_alarm_rate, simulate_false_alarms
from stream_app.core.drift.monitor import DriftMonitor, PartitionWindows
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.outlier_window import DEFAULT_ALPHA, DEFAULT_WINDOW, OutlierRateDetector
from stream_app.core.drift.window import MIN_CLEAN_SHARE, OpenWindow

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CATEGORY_ALPHA",
    "DEFAULT_WINDOW",
    "MIN_CLEAN_SHARE",
    "AlertContext",
    "AlertWindow",
    "BernoulliCusum",
    "CategoryCount",
    "CategoryMixAlert",
    "CategoryMixDetector",
    "CategoryThresholds",
    "CusumAlarm",
    "CusumChannel",
    "CusumDesign",
    "DriftAlert",
    "DriftMonitor",
    "DriftRecord",
    "DriftResolved",
    "EmbeddingDriftAlert",
    "EmbeddingThresholds",
    "MovedCentroid",
    "Observation",
    "OpenWindow",
    "OutlierRateDetector",
    "PartitionWindows",
    "SequentialDriftAlert",
    "SequentialOutlierDetector",
    "SequentialThresholds",
    "alert_id",
    "average_run_length",
    "critical_count",
    "default_channels",
    "design_cusum",
    "simulate_false_alarm_rate",
    "simulate_false_alarms",
    "tail_probability",
]
