"""Drift detectors (pure: no Kafka, no asyncio) and the records of the ``drift`` topic.

Detectors (``detector``): one per file behind one small API, as river's: ``update(observation) ->
Decision | None`` and ``reset()``, over the inputs of ONE input partition (``observation``:
``Observation``, ``WindowEnd``, ``Rewind``). They hold statistics only; a ``Decision`` says what
fired (detector, firing or resolved, statistic and threshold, the offsets of its evidence).

* ``OutlierRateDetector`` (outlier_window): binomial test of the share of embeddings beyond tau.
* ``CategoryMixDetector`` (category_mix): chi-square test of the predicted top-category mix.
* ``SequentialOutlierDetector`` (cusum): one-sided Bernoulli CUSUMs across windows of the outlier
  flag (distance > tau) and of a nearer distance cut (``BernoulliCusum``, thresholds from the exact
  run length of ``design_cusum``); quiet while the window test reports the partition.

Windows are aligned to offsets, per input partition: window k of partition p covers offsets
``[k*W, (k+1)*W)`` (``monitor``), so every record names a window that any replay recomputes the
same way, and carries a deterministic ``alert_id`` (``alerts.alert_id``).

* ``DriftMonitor`` (monitor): per partition, lazily, its detectors (``PartitionWindows``);
  ``update(obs)`` and ``dead_letter(partition, offset, processed_at)`` return the records to publish.
* ``RecordBuilder`` (records): decision -> record, the only place that writes one.
* Records (alerts): ``EmbeddingDriftAlert``, ``CategoryMixAlert``, ``SequentialDriftAlert``
  (``status: firing``) and ``DriftResolved`` (``status: resolved``): the ``drift`` topic messages.

The build-time false-alarm simulation lives in ``export.false_alarms``.
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
from stream_app.core.drift.detector import Decision, Detector, DetectorInput
from stream_app.core.drift.monitor import DriftMonitor, PartitionWindows
from stream_app.core.drift.observation import REWIND, Observation, Rewind, WindowEnd
from stream_app.core.drift.outlier_window import DEFAULT_ALPHA, DEFAULT_WINDOW, OutlierRateDetector
from stream_app.core.drift.records import RecordBuilder
from stream_app.core.drift.window import OpenWindow
from stream_app.core.drift.windowed import MIN_CLEAN_SHARE

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CATEGORY_ALPHA",
    "DEFAULT_WINDOW",
    "MIN_CLEAN_SHARE",
    "REWIND",
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
    "Decision",
    "Detector",
    "DetectorInput",
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
    "RecordBuilder",
    "Rewind",
    "SequentialDriftAlert",
    "SequentialOutlierDetector",
    "SequentialThresholds",
    "WindowEnd",
    "alert_id",
    "average_run_length",
    "critical_count",
    "default_channels",
    "design_cusum",
    "tail_probability",
]
