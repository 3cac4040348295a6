"""Records of the ``drift`` topic (pydantic v2); ``stream_app.messages.drift_alert_adapter`` validates them.

``records.RecordBuilder`` makes them from the detectors' decisions (the detectors never see them).

Every record describes one window of one input partition: offsets ``[start_offset, end_offset)``
of ``topic``/``partition``, aligned to the window size (window k covers ``[k*W, (k+1)*W)``), so the
same messages always fall into the same window, whichever worker consumes them and however often.

* ``status: "firing"``: ``EmbeddingDriftAlert`` or ``CategoryMixAlert``; ``recommendation`` is
  ``investigate`` on the first drifting window of the partition and ``retrain`` once
  ``retrain_after`` consecutive windows drifted.
* ``status: "resolved"``: ``DriftResolved``, one per drift episode, after the first clean window
  that follows a firing alert of the same (partition, type); ``resolves`` names that alert.
* ``SequentialDriftAlert`` (type ``embedding_drift_sequential``, ``status: "firing"``): a CUSUM of
  a distance flag crossed its threshold (``cusum``); it names the aligned window it fired in and,
  in ``run_start_offset``/``alarm_offset``, the run of evidence its id is derived from. Never resolved.

``alert_id`` is deterministic (`alert_id`): a pager deduplicates re-sent records by it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stream_app.core.drift.detector import Status

Recommendation = Literal["investigate", "retrain"]
AlertType = Literal["embedding_drift", "category_mix"]  # the windowed tests (resolved records name one)
SequentialType = Literal["embedding_drift_sequential"]

ALERT_ID_CHARS = 32


def alert_id(
    status: Status,
    alert_type: AlertType | SequentialType,
    model_version: str,
    group_id: str,
    topic: str,
    partition: int,
    start_offset: int,
    end_offset: int,
) -> str:
    """Deterministic id of a drift record: hex SHA-256 (first 32 chars) of what identifies it.

    The inputs are the status, the alert type, the model version, the consumer group, the input
    topic, the partition and the window ``[start_offset, end_offset)``: nothing that depends on
    who computed it or when. In particular NOT the worker id: after a SIGKILL in Kubernetes the
    replacement pod has another name, replays the uncommitted messages and re-sends the alert of a
    window; the re-sent alert must carry the same id so that the pager deduplicates it. (Its body
    may differ: ``worker_id``, ``created_at``, and ``consecutive_windows``/``recommendation``, which
    restart from zero in a new process.)

    A sequential alert passes ``[run_start_offset, alarm_offset + 1)`` as its offsets (``cusum``).
    """
    material = json.dumps(
        ["drift/v1", status, alert_type, model_version, group_id, topic, int(partition), int(start_offset),
         int(end_offset)],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return sha256(material.encode("utf-8")).hexdigest()[:ALERT_ID_CHARS]


@dataclass(frozen=True, slots=True)
class AlertContext:
    """What every record says besides its decision and window: who and what it is about."""

    model_version: str = ""
    group_id: str = ""
    topic: str = ""
    worker_id: str = ""


class _Frozen(BaseModel):
    # Frozen; unknown fields are ignored so that older consumers read newer alerts.
    model_config = ConfigDict(frozen=True)


class AlertWindow(_Frozen):
    """The window: offsets ``[start_offset, end_offset)`` of one input partition, and what was seen of it
    when the record was made."""

    start_offset: int = Field(ge=0, description="first offset of the window (a multiple of the window size)")
    end_offset: int = Field(ge=1, description="first offset after the window (exclusive)")
    last_offset: int = Field(ge=0, description="highest offset of the window seen when the record was made")
    observed: int = Field(ge=0, description="messages of the window with a prediction, so far")
    dead_letters: int = Field(ge=0, description="offsets of the window that were dead-lettered, so far")
    first_event_time: datetime | None = Field(description="earliest event_time in the window, if any")
    last_event_time: datetime | None = Field(description="latest event_time in the window, if any")
    first_processed_at: datetime
    last_processed_at: datetime


class EmbeddingThresholds(_Frozen):
    """The numbers the embedding_drift decision used."""

    tau: float | None = Field(description="cosine distance beyond which a message is an outlier (calibration)")
    expected_rate: float = Field(gt=0, lt=1, description="p0: outlier rate in distribution (1 - quantile)")
    alpha: float = Field(gt=0, lt=1, description="false-alarm probability per window")
    window_size: int = Field(ge=1, description="W: offsets per window (STREAM_DRIFT_WINDOW)")
    critical_count: int = Field(ge=1, description="c: smallest count with P(Binomial(W, p0) >= c) <= alpha")


class CategoryThresholds(_Frozen):
    """The numbers the category_mix decision used."""

    alpha: float = Field(gt=0, lt=1, description="drift when the chi-square p-value is <= alpha")
    window_size: int = Field(ge=1, description="W: offsets per window (STREAM_DRIFT_WINDOW)")
    degrees_of_freedom: int = Field(ge=1, description="merged bins - 1")
    critical_chi_square: float = Field(ge=0, description="chi-square value whose p-value is alpha")
    min_expected: float = Field(gt=0, description="bins with fewer expected messages are merged")


class SequentialThresholds(_Frozen):
    """The numbers the embedding_drift_sequential decision used (integer Bernoulli CUSUM, ``cusum``)."""

    cut: float | None = Field(
        description="cosine distance beyond which a message is flagged (tau for the 0.99 channel)")
    quantile: float = Field(gt=0, lt=1, description="calibration quantile of in-distribution distances the cut is at")
    expected_rate: float = Field(gt=0, lt=1, description="p0: flagged rate in distribution (1 - quantile)")
    alternative_rate: float = Field(gt=0, lt=1, description="p1: the flagged rate the CUSUM is tuned to detect")
    threshold: float = Field(gt=0, description="h: alarm when the log-likelihood-ratio statistic reaches it")
    calibrated_rate: float = Field(gt=0, lt=1, description="in-control rate at which h was calibrated (>= p0)")
    in_control_arl: float = Field(gt=0, description="exact mean messages between false alarms at calibrated_rate")


class MovedCentroid(_Frozen):
    """A centroid that attracted more of the window's messages than in the reference."""

    centroid: int = Field(ge=0)
    count: int = Field(ge=0)
    expected_count: float = Field(ge=0)
    share: float = Field(ge=0, le=1)
    reference_share: float = Field(ge=0, le=1)


class CategoryCount(_Frozen):
    """Observed vs reference frequency of one top category in the window."""

    name: str
    count: int = Field(ge=0)
    expected_count: float = Field(ge=0)
    share: float = Field(ge=0, le=1)
    reference_share: float = Field(ge=0, le=1)


class _Record(_Frozen):
    # Every field is always written, defaults included: the schema says so (``required``).
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    # type and status first: what a reader of the topic looks at first (subclasses narrow them).
    type: AlertType | SequentialType
    status: Status
    alert_id: str = Field(description="deterministic: same for a re-sent record of the same window (see alert_id)")
    model_version: str
    group_id: str = Field(description="consumer group of the workers (STREAM_GROUP_ID)")
    topic: str = Field(description="input topic")
    partition: int = Field(ge=0, description="input partition the window belongs to")
    window: AlertWindow
    worker_id: str = Field(description="worker that sent this copy (STREAM_WORKER_ID); not part of alert_id")
    created_at: datetime


class EmbeddingDriftAlert(_Record):
    """Too many embeddings far from every centroid: outliers >= critical_count in a window."""

    type: Literal["embedding_drift"] = "embedding_drift"
    status: Literal["firing"] = "firing"
    n: int = Field(ge=1, description="observations in the window when the alert fired")
    outliers: int = Field(ge=0)
    expected: float = Field(ge=0, description="n * p0")
    critical_count: int = Field(ge=1, description="c: outlier count that decides drift for the window size")
    p_value: float = Field(ge=0, le=1, description="P(Binomial(n, p0) >= outliers)")
    thresholds: EmbeddingThresholds
    top_moved_centroids: list[MovedCentroid]
    outlier_sample: list[str] = Field(description="product_ids of some outliers of the window")
    consecutive_windows: int = Field(ge=1, description="drifting windows of this partition in a row")
    recommendation: Recommendation


class CategoryMixAlert(_Record):
    """The mix of predicted top categories departs from the calibration's (two-sample chi-square)."""

    type: Literal["category_mix"] = "category_mix"
    status: Literal["firing"] = "firing"
    n: int = Field(ge=1, description="observations in the window")
    chi_square: float = Field(ge=0)
    degrees_of_freedom: int = Field(ge=1)
    p_value: float = Field(ge=0, le=1)
    thresholds: CategoryThresholds
    categories: list[CategoryCount] = Field(description="every label, largest |Pearson residual| first")
    consecutive_windows: int = Field(ge=1, description="drifting windows of this partition in a row")
    recommendation: Recommendation


class SequentialDriftAlert(_Record):
    """The rate of far messages rose: the CUSUM of ``distance > cut`` reached its threshold (an early
    warning; ``thresholds`` says which channel: the cut at tau or a nearer reference quantile).

    ``window`` is the aligned window it fired in (at most one such alert per window); the evidence is
    the run ``[run_start_offset, alarm_offset]`` of the partition, which may span several windows.
    """

    type: Literal["embedding_drift_sequential"] = "embedding_drift_sequential"
    status: Literal["firing"] = "firing"
    run_start_offset: int = Field(
        ge=0, description="first offset of the run (the statistic last left 0 there); part of alert_id")
    alarm_offset: int = Field(ge=0, description="offset of the message that crossed the threshold; part of alert_id")
    n: int = Field(ge=1, description="observations in the run")
    flagged: int = Field(ge=1, description="messages of the run beyond the cut")
    expected: float = Field(ge=0, description="n * p0")
    statistic: float = Field(
        ge=0, description="log-likelihood ratio of p1 against p0 accumulated over the run (>= threshold)")
    thresholds: SequentialThresholds
    top_moved_centroids: list[MovedCentroid] = Field(description="centroids that gained most during the run")
    flagged_sample: list[str] = Field(description="product_ids of the first flagged messages of the run")
    recommendation: Literal["investigate"] = Field(
        "investigate", description="always investigate: the window tests decide retrain")


class DriftResolved(_Record):
    """A (partition, type) that drifted had a clean window: ends the firing alert ``resolves``."""

    type: AlertType  # the windowed tests only
    status: Literal["resolved"] = "resolved"
    resolves: str = Field(description="alert_id of the last firing alert of this partition and type")
    drifted_windows: int = Field(ge=1, description="consecutive drifting windows this clean window ends")
    n: int = Field(ge=1, description="observations in the clean window")
    statistic: float = Field(ge=0, description="outlier count (embedding_drift) or chi-square (category_mix)")
    p_value: float = Field(ge=0, le=1)
    thresholds: EmbeddingThresholds | CategoryThresholds


DriftAlert = EmbeddingDriftAlert | CategoryMixAlert | SequentialDriftAlert
DriftRecord = EmbeddingDriftAlert | CategoryMixAlert | SequentialDriftAlert | DriftResolved
