"""Decisions -> records of the ``drift`` topic: the one place that writes them (``alerts`` has the models).

A detector's ``Decision`` says what fired over which offsets; `RecordBuilder.record` adds what a
reader of the topic needs besides: who sent it (``AlertContext``), when (``clock``), the window
(``OpenWindow.snapshot``), the deterministic ``alert_id`` (``alerts.alert_id``), the thresholds the
decision used, the recommendation (``retrain`` once a streak reaches ``retrain_after``) and the
evidence explained from the observations the decision names: the centroids that gained most, the
category table, product ids of the first flagged messages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from math import sqrt
from typing import TypedDict

from stream_app.core.drift.alerts import (
    AlertContext,
    AlertType,
    AlertWindow,
    CategoryCount,
    CategoryMixAlert,
    CategoryThresholds,
    DriftRecord,
    DriftResolved,
    EmbeddingDriftAlert,
    EmbeddingThresholds,
    MovedCentroid,
    Recommendation,
    SequentialDriftAlert,
    SequentialThresholds,
    SequentialType,
    alert_id,
)
from stream_app.core.drift.category_mix import CategoryMixDetector
from stream_app.core.drift.cusum import CusumChannel, SequentialOutlierDetector
from stream_app.core.drift.detector import Decision, Detector, Status
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.outlier_window import OutlierRateDetector
from stream_app.core.drift.window import OpenWindow

DEFAULT_RETRAIN_AFTER = 3
DEFAULT_SAMPLE_SIZE = 10
TOP_MOVED = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Header(TypedDict):
    """The fields of ``alerts._Record``: the same in every record."""

    alert_id: str
    model_version: str
    group_id: str
    topic: str
    partition: int
    window: AlertWindow
    worker_id: str
    created_at: datetime


class RecordBuilder:
    """Builds the records of the decisions of one worker's detectors (every partition).

    ``context``: model version, consumer group, input topic, worker (``alert_id`` uses all but the
    worker; default: all empty). ``tau``: reported in the thresholds (the outlier cut).
    ``reference_centroid_share``: share of calibration messages per centroid (ranks the centroids
    that gained most). ``retrain_after``: drifting windows in a row before the recommendation turns
    from ``investigate`` into ``retrain``. ``sample_size``: product ids of flagged messages to list.
    """

    def __init__(
        self,
        context: AlertContext | None = None,
        tau: float | None = None,
        reference_centroid_share: Sequence[float] = (),
        retrain_after: int = DEFAULT_RETRAIN_AFTER,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if retrain_after < 1:
            raise ValueError(f"retrain_after must be >= 1, got {retrain_after}")
        if sample_size < 0:
            raise ValueError(f"sample_size must be >= 0, got {sample_size}")
        self.context = AlertContext() if context is None else context
        self.tau = None if tau is None else float(tau)
        self.reference_centroid_share = [float(s) for s in reference_centroid_share]
        self.retrain_after = retrain_after
        self.sample_size = sample_size
        self._clock = clock

    def record(self, detector: Detector, decision: Decision, window: OpenWindow,
               observations: Iterable[Observation]) -> DriftRecord:
        """The record of ``decision`` of ``detector``, made while ``window`` is the partition's open window.

        ``observations``: the partition's recent observations, at least those of the decision's
        offsets ``[start_offset, end_offset)`` (the others are ignored).
        """
        evidence = [o for o in observations if decision.start_offset <= o.offset < decision.end_offset]
        if isinstance(detector, OutlierRateDetector):
            thresholds = EmbeddingThresholds(tau=self.tau, expected_rate=detector.p0, alpha=detector.alpha,
                                             window_size=detector.window_size, critical_count=detector.critical)
            if decision.status == "resolved":
                return self._resolved("embedding_drift", decision, window, thresholds)
            return self._embedding(detector, decision, window, evidence, thresholds)
        if isinstance(detector, CategoryMixDetector):
            df = len(detector.plan(decision.n)) - 1
            category = CategoryThresholds(alpha=detector.alpha, window_size=detector.window_size, degrees_of_freedom=df,
                                          critical_chi_square=decision.threshold, min_expected=detector.min_expected)
            if decision.status == "resolved":
                return self._resolved("category_mix", decision, window, category)
            return self._category(detector, decision, window, evidence, category)
        if isinstance(detector, SequentialOutlierDetector) and decision.status == "firing":
            return self._sequential(detector.channels[decision.channel], decision, window, evidence)
        raise TypeError(f"no drift record for a {decision.status} decision of {type(detector).__name__}")

    def _id(self, status: Status, kind: AlertType | SequentialType, partition: int, offsets: tuple[int, int]) -> str:
        c = self.context
        return alert_id(status, kind, c.model_version, c.group_id, c.topic, partition, *offsets)

    def _header(self, status: Status, kind: AlertType | SequentialType, decision: Decision,
                window: OpenWindow) -> _Header:
        """The fields every record has: its id, who sent it, about what, when."""
        c = self.context
        return _Header(alert_id=self._id(status, kind, window.partition, (decision.start_offset, decision.end_offset)),
                       model_version=c.model_version, group_id=c.group_id, topic=c.topic, partition=window.partition,
                       window=window.snapshot(), worker_id=c.worker_id, created_at=self._clock())

    def _recommendation(self, streak: int) -> Recommendation:
        return "retrain" if streak >= self.retrain_after else "investigate"

    def _sample(self, evidence: Iterable[Observation], flagged: Callable[[Observation], bool]) -> list[str]:
        """Product ids of the first flagged observations of the evidence."""
        return [o.product_id for o in evidence if flagged(o)][: self.sample_size]

    def _moved_centroids(self, evidence: Sequence[Observation]) -> list[MovedCentroid]:
        """Centroids with the largest positive Pearson residual (count - expected) / sqrt(expected)."""
        n, ref = len(evidence), self.reference_centroid_share
        scored = []
        for centroid, count in Counter(o.nearest_centroid for o in evidence).items():
            share = ref[centroid] if 0 <= centroid < len(ref) else 0.0
            expected = n * share
            # A centroid never seen in calibration: floor the denominator so it ranks high but finite.
            residual = (count - expected) / sqrt(max(expected, 0.5))
            if residual > 0:
                scored.append((residual, centroid, count, expected, share))
        scored.sort(reverse=True)
        return [MovedCentroid(centroid=centroid, count=count, expected_count=expected, share=count / n,
                              reference_share=min(1.0, share))
                for _, centroid, count, expected, share in scored[:TOP_MOVED]]

    def _embedding(self, detector: OutlierRateDetector, decision: Decision, window: OpenWindow,
                   evidence: Sequence[Observation], thresholds: EmbeddingThresholds) -> EmbeddingDriftAlert:
        n = decision.n
        return EmbeddingDriftAlert(
            **self._header("firing", "embedding_drift", decision, window),
            n=n,
            outliers=int(decision.statistic),
            expected=n * detector.p0,
            critical_count=detector.critical,
            p_value=_p_value(decision),
            thresholds=thresholds,
            top_moved_centroids=self._moved_centroids(evidence),
            outlier_sample=self._sample(evidence, lambda o: o.outlier),
            consecutive_windows=decision.streak,
            recommendation=self._recommendation(decision.streak),
        )

    def _category(self, detector: CategoryMixDetector, decision: Decision, window: OpenWindow,
                  evidence: Sequence[Observation], thresholds: CategoryThresholds) -> CategoryMixAlert:
        n = decision.n
        counts = Counter(o.top_index for o in evidence)
        rows = []
        for i, name in enumerate(detector.labels):
            expected = n * float(detector.reference_share[i])
            residual = (counts[i] - expected) / sqrt(max(expected, 0.5))
            rows.append((abs(residual), i, name, counts[i], expected))
        rows.sort(key=lambda r: (-r[0], r[1]))
        return CategoryMixAlert(
            **self._header("firing", "category_mix", decision, window),
            n=n,
            chi_square=decision.statistic,
            degrees_of_freedom=thresholds.degrees_of_freedom,
            p_value=_p_value(decision),
            thresholds=thresholds,
            categories=[CategoryCount(name=name, count=count, expected_count=expected, share=count / n,
                                      reference_share=float(detector.reference_share[i]))
                        for _, i, name, count, expected in rows],
            consecutive_windows=decision.streak,
            recommendation=self._recommendation(decision.streak),
        )

    def _sequential(self, channel: CusumChannel, decision: Decision, window: OpenWindow,
                    evidence: Sequence[Observation]) -> SequentialDriftAlert:
        n, cut = decision.n, channel.cut

        def flagged(o: Observation) -> bool:
            return o.outlier if cut is None else o.distance > cut

        return SequentialDriftAlert(
            **self._header("firing", "embedding_drift_sequential", decision, window),
            run_start_offset=decision.start_offset,
            alarm_offset=decision.end_offset - 1,
            n=n,
            flagged=sum(map(flagged, evidence)),
            expected=n * channel.design.p0,
            statistic=decision.statistic,
            thresholds=_sequential_thresholds(channel, self.tau),
            top_moved_centroids=self._moved_centroids(evidence),
            flagged_sample=self._sample(evidence, flagged),
            recommendation="investigate",
        )

    def _resolved(self, kind: AlertType, decision: Decision, window: OpenWindow,
                  thresholds: EmbeddingThresholds | CategoryThresholds) -> DriftResolved:
        if decision.resolves is None:
            raise ValueError(f"a resolved decision of {kind} must name the firing window it resolves")
        return DriftResolved(
            **self._header("resolved", kind, decision, window),
            type=kind,
            resolves=self._id("firing", kind, window.partition, decision.resolves),
            drifted_windows=decision.streak,
            n=decision.n,
            statistic=decision.statistic,
            p_value=_p_value(decision),
            thresholds=thresholds,
        )


def _p_value(decision: Decision) -> float:
    if decision.p_value is None:
        raise ValueError(f"a {decision.status} decision of {decision.detector} needs a p-value for its record")
    return decision.p_value


@lru_cache(maxsize=16)
def _sequential_thresholds(channel: CusumChannel, tau: float | None) -> SequentialThresholds:
    """The numbers a channel decides with (cached: ``p1`` is a bisection)."""
    d = channel.design
    return SequentialThresholds(
        cut=tau if channel.cut is None else float(channel.cut),
        quantile=channel.quantile,
        expected_rate=d.p0,
        alternative_rate=d.p1,
        threshold=d.h,
        calibrated_rate=min(d.guard * d.p0, 0.999),
        in_control_arl=d.arl_at_guard,
    )
