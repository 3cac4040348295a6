"""Drift detectors: exact binomial critical counts, windowed decisions and their records, category mix,
false alarms."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from export.false_alarms import simulate_false_alarm_rate, simulate_false_alarms
from stream_app.core.bundle import DriftCalibration
from stream_app.core.drift import (
    AlertContext,
    CategoryMixAlert,
    CategoryMixDetector,
    Decision,
    Detector,
    DriftMonitor,
    DriftRecord,
    DriftResolved,
    EmbeddingDriftAlert,
    Observation,
    OutlierRateDetector,
    PartitionWindows,
    RecordBuilder,
    WindowEnd,
    alert_id,
    critical_count,
    tail_probability,
)
from stream_app.core.drift.category_mix import merge_plan, mix_statistic
from tests.support.examples import examples

T0 = datetime(2024, 1, 1, tzinfo=UTC)
W = 500  # the default window
P0 = 0.01  # outlier rate in distribution (calibration quantile 0.99)
ALPHA = 1e-6
C = critical_count(W, P0, ALPHA)  # outliers that decide a window of W
TAU = 0.4
K = 8  # centroids, equally likely in the reference
UNIFORM_CENTROIDS = [1 / K] * K
SMALL_W = 100  # windows of the streak tests
SMALL_ALPHA = 1e-4
ELO7_SHARE = [0.46, 0.23, 0.18, 0.07, 0.035, 0.025]
ELO7_LABELS = ["Lembrancinhas", "Decoração", "Bebê", "Papel e Cia", "Outros", "Bijuterias e Jóias"]


def observations(outliers: np.ndarray, tops: np.ndarray | None = None, partitions: int = 1) -> Iterator[Observation]:
    """Observations with the given outlier flags; offsets dense per partition (round robin)."""
    tops = np.zeros(len(outliers), dtype=int) if tops is None else tops
    for i, (flag, top) in enumerate(zip(outliers, tops, strict=True)):
        yield Observation(
            product_id=f"p{i}",
            distance=0.9 if flag else 0.2,
            nearest_centroid=i % K,
            outlier=bool(flag),
            top_index=int(top),
            partition=i % partitions,
            offset=i // partitions,
            event_time=T0 + timedelta(seconds=i),
            processed_at=T0 + timedelta(seconds=i, milliseconds=5),
        )


def run(detector: OutlierRateDetector | CategoryMixDetector, stream: Iterable[Observation],
        records: RecordBuilder | None = None, firing_only: bool = True) -> list[tuple[int, Any]]:
    """(index of the observation that raised it, record) for every firing alert (and resolution unless
    ``firing_only``), feeding one partition's offset-aligned windows of the detector's size."""
    windows = PartitionWindows(0, detector.window_size, [detector], records)
    out: list[tuple[int, DriftRecord]] = []
    for i, obs in enumerate(stream):
        assert obs.partition == 0
        out += [(i, r) for r in windows.feed(obs.offset, obs.processed_at, obs)]
    return [(i, r) for i, r in out if not firing_only or r.status == "firing"]


def calibration(**fields: Any) -> DriftCalibration:
    """A bundle's drift calibration at the 0.99 quantile with the Elo7 mix, ``fields`` replaced."""
    return DriftCalibration(**{"k": K, "quantile": 1 - P0, "tau": TAU, "distance_quantiles": {},
                               "centroid_share": UNIFORM_CENTROIDS, "category_share": ELO7_SHARE, "n_fit": 1000,
                               "n_calibration": 1000, **fields})


# -- binomial ---------------------------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(
    window=st.integers(1, 5000),
    p0=st.floats(1e-4, 0.5),
    alpha=st.floats(1e-9, 0.5),
)
def test_critical_count_is_the_smallest_count_within_alpha(window: int, p0: float, alpha: float) -> None:
    c = critical_count(window, p0, alpha)
    assert 1 <= c <= window + 1
    assert tail_probability(c, window, p0) <= alpha  # P(X >= c) = sf(c - 1)
    assert tail_probability(c - 1, window, p0) > alpha  # and c - 1 is not enough
    if c <= window:
        assert tail_probability(c, window, p0) == pytest.approx(binom.sf(c - 1, window, p0), rel=1e-12)


@settings(max_examples=examples(100), deadline=None)
@given(window=st.integers(10, 2000), p0=st.floats(1e-3, 0.2), a1=st.floats(1e-9, 0.1), a2=st.floats(1e-9, 0.1))
def test_critical_count_is_monotone_in_alpha(window: int, p0: float, a1: float, a2: float) -> None:
    lo, hi = sorted((a1, a2))
    assert critical_count(window, p0, lo) >= critical_count(window, p0, hi)


def test_default_figures_in_the_docstring() -> None:
    # The figures of outlier_window's docstring, for W = 500, p0 = 0.01, alpha = 1e-6.
    assert C == 20
    assert tail_probability(C, W, P0) == pytest.approx(2.77e-7, rel=0.01)
    assert tail_probability(C, W, 2 * P0) == pytest.approx(0.00313, rel=0.01)  # 2 x p0: 0.63 / 100k msgs
    assert tail_probability(C, W, 5 * P0) == pytest.approx(0.873, rel=0.01)
    assert tail_probability(C, W, 10 * P0) > 0.9999


def test_bad_parameters_name_the_argument() -> None:
    with pytest.raises(ValueError, match="alpha"):
        critical_count(W, P0, 0.0)
    with pytest.raises(ValueError, match="p0"):
        critical_count(W, 1.0, ALPHA)
    with pytest.raises(ValueError, match="unreachable"):
        OutlierRateDetector(window_size=3, expected_rate=P0, alpha=1e-9)
    with pytest.raises(ValueError, match="retrain_after"):
        RecordBuilder(retrain_after=0)


# -- outlier-rate detector ----------------------------------------------------------------------------


def test_no_alert_on_in_control_stream() -> None:
    rng = np.random.default_rng(20240101)
    detector = OutlierRateDetector(window_size=W, expected_rate=P0, alpha=ALPHA)
    windows = 400
    flags = rng.random(W * windows) < P0  # windows of Bernoulli(p0)
    assert run(detector, observations(flags), RecordBuilder(reference_centroid_share=UNIFORM_CENTROIDS)) == []
    assert detector.consecutive_windows == 0


def test_the_decision_is_statistics_only() -> None:
    """What the detector itself returns: the test's numbers and the window, nothing of the record."""
    detector = OutlierRateDetector(window_size=W, expected_rate=P0, alpha=ALPHA)
    stream = list(observations(np.ones(W, dtype=bool)))
    decisions = [(obs.offset, d) for obs in stream if (d := detector.update(obs)) is not None]
    assert decisions == [(C - 1, Decision("embedding_drift", "firing", float(C), float(C), 0, W, C,
                                          p_value=tail_probability(C, C, P0), streak=1))]
    assert detector.update(WindowEnd(0, W)) is None  # a drifting window does not resolve
    assert isinstance(detector, Detector) and detector.evidence_start is None


def test_alerts_in_first_window_at_ten_times_the_rate() -> None:
    rng = np.random.default_rng(7)
    context = AlertContext(model_version="v1", group_id="g", topic="products", worker_id="pod-a")
    detector = OutlierRateDetector(window_size=W, expected_rate=P0, alpha=ALPHA)
    flags = rng.random(2 * W) < 10 * P0
    alerts = run(detector, observations(flags), RecordBuilder(context, tau=TAU))
    assert alerts, "no alert at 10 x the expected outlier rate"
    index, alert = alerts[0]
    assert index < W  # decided inside the first window, at the c-th outlier
    assert isinstance(alert, EmbeddingDriftAlert)
    assert alert.outliers == alert.critical_count == C and alert.n == index + 1
    assert alert.expected == pytest.approx(alert.n * P0)
    assert alert.p_value == pytest.approx(binom.sf(C - 1, alert.n, P0))
    assert alert.recommendation == "investigate" and alert.consecutive_windows == 1
    assert alert.model_version == "v1" and alert.type == "embedding_drift" and alert.status == "firing"
    assert (alert.group_id, alert.topic, alert.partition, alert.worker_id) == ("g", "products", 0, "pod-a")
    assert alert.alert_id == alert_id("firing", "embedding_drift", "v1", "g", "products", 0, 0, W)
    assert alert.thresholds.model_dump() == {"tau": TAU, "expected_rate": P0, "alpha": ALPHA, "window_size": W,
                                             "critical_count": C}
    assert alert.outlier_sample == [f"p{i}" for i in np.flatnonzero(flags[: index + 1])[:10]]
    # Window: offsets [0, W) of partition 0, seen up to the deciding message, first at T0.
    assert (alert.window.start_offset, alert.window.end_offset, alert.window.last_offset) == (0, W, index)
    assert alert.window.observed == alert.n and alert.window.dead_letters == 0
    assert alert.window.first_event_time == T0
    assert alert.window.last_event_time == T0 + timedelta(seconds=index)
    # The alert is the drift topic's message: it round-trips through JSON.
    assert EmbeddingDriftAlert.model_validate_json(alert.model_dump_json()) == alert


def test_one_alert_per_window_and_investigate_then_retrain() -> None:
    detector = OutlierRateDetector(window_size=SMALL_W, expected_rate=P0, alpha=SMALL_ALPHA)
    windows = 5
    flags = np.ones(SMALL_W * windows, dtype=bool)  # every message an outlier: every window drifts
    alerts = run(detector, observations(flags), RecordBuilder(retrain_after=3))
    assert [i // SMALL_W for i, _ in alerts] == list(range(windows))  # exactly one per window
    assert [a.consecutive_windows for _, a in alerts] == list(range(1, windows + 1))
    assert [a.recommendation for _, a in alerts] == ["investigate", "investigate", "retrain", "retrain", "retrain"]


def test_clean_window_resets_the_streak() -> None:
    detector = OutlierRateDetector(window_size=SMALL_W, expected_rate=P0, alpha=SMALL_ALPHA)
    drifting, clean = np.ones(SMALL_W, dtype=bool), np.zeros(SMALL_W, dtype=bool)
    flags = np.concatenate([drifting, clean, drifting, drifting])
    records = run(detector, observations(flags), RecordBuilder(retrain_after=2), firing_only=False)
    assert [(i // SMALL_W, r.status, getattr(r, "consecutive_windows", None)) for i, r in records] == [
        (0, "firing", 1),
        (1, "resolved", None),  # at the end of the clean window
        (2, "firing", 1),
        (3, "firing", 2),
    ]
    assert [r.recommendation for _, r in records if r.status == "firing"] == ["investigate", "investigate", "retrain"]
    resolved = records[1][1]
    assert isinstance(resolved, DriftResolved) and records[1][0] == 2 * SMALL_W - 1
    assert resolved.resolves == records[0][1].alert_id and resolved.drifted_windows == 1
    assert (resolved.window.start_offset, resolved.window.end_offset) == (SMALL_W, 2 * SMALL_W)
    assert resolved.statistic == 0 and resolved.n == SMALL_W


def test_moved_centroids_rank_the_gainers() -> None:
    # Reference: K centroids equally likely; the drifting window piles onto centroid 5.
    window = 200
    detector = OutlierRateDetector(window_size=window, expected_rate=P0, alpha=ALPHA)
    stream = [Observation(f"p{i}", 0.9, 5 if i % 2 else i % K, True, 0, 0, i, None, T0) for i in range(window)]
    [(_, alert)] = run(detector, stream, RecordBuilder(reference_centroid_share=UNIFORM_CENTROIDS))
    assert alert.window.first_event_time is None
    top = alert.top_moved_centroids[0]
    assert top.centroid == 5 and top.reference_share == pytest.approx(1 / K)
    assert top.count > top.expected_count


def test_the_partition_keeps_only_the_evidence_a_decision_can_name() -> None:
    # A windowed test names its open window: the observations of the window so far, none once it closed.
    detector = OutlierRateDetector(window_size=SMALL_W, expected_rate=P0, alpha=SMALL_ALPHA)
    windows = PartitionWindows(0, SMALL_W, [detector])
    rng = np.random.default_rng(4)
    for obs in observations(rng.random(SMALL_W * 20) < P0):
        windows.feed(obs.offset, obs.processed_at, obs)
        position = obs.offset % SMALL_W
        assert windows.retained == (0 if position == SMALL_W - 1 else position + 1)


# -- category mix -------------------------------------------------------------------------------------


def test_category_mix_quiet_in_control_and_alerts_on_a_shift() -> None:
    rng = np.random.default_rng(11)
    detector = CategoryMixDetector(W, ELO7_SHARE, ELO7_LABELS, alpha=ALPHA)
    in_control_windows, shifted_windows = 100, 3
    in_control = rng.choice(len(ELO7_SHARE), size=W * in_control_windows, p=ELO7_SHARE)
    # Then a strong shift: Bebê (2) collapses, Papel e Cia (3) and Outros (4) rise.
    shifted_share = [0.40, 0.23, 0.05, 0.20, 0.10, 0.02]
    shifted = rng.choice(len(shifted_share), size=W * shifted_windows, p=shifted_share)
    tops = np.concatenate([in_control, shifted])
    alerts = run(detector, observations(np.zeros(len(tops), bool), tops),
                 RecordBuilder(AlertContext(model_version="v1"), retrain_after=2))
    # Quiet in control, every shifted window drifts.
    assert [i // W for i, _ in alerts] == list(range(in_control_windows, in_control_windows + shifted_windows))
    assert [a.recommendation for _, a in alerts] == ["investigate", "retrain", "retrain"]
    alert = alerts[0][1]
    assert isinstance(alert, CategoryMixAlert) and alert.p_value <= ALPHA and alert.n == W
    assert alert.degrees_of_freedom == alert.thresholds.degrees_of_freedom == len(ELO7_SHARE) - 1
    assert alert.thresholds.critical_chi_square == pytest.approx(35.9, abs=0.1)  # as in the module docstring
    assert alert.chi_square >= alert.thresholds.critical_chi_square
    assert {c.name for c in alert.categories} == set(ELO7_LABELS)
    assert alert.categories[0].name in {"Bebê", "Papel e Cia", "Outros"}
    assert sum(c.count for c in alert.categories) == W
    assert CategoryMixAlert.model_validate_json(alert.model_dump_json()) == alert


def test_zero_reference_shares_are_merged_not_floored() -> None:
    # Two labels never seen in calibration: a single message of one of them must not alarm.
    share = np.array([0.5, 0.3, 0.2, 0.0, 0.0])
    detector = CategoryMixDetector(W, list(share), list("abcde"), alpha=ALPHA)
    assert detector.bins == [[1], [0], [3, 4, 2]]  # the empty labels pool with the smallest real one
    expected = W * share
    counts = expected.astype(int)
    counts[2] -= 1  # one message of label 2 becomes label 3
    counts[3] += 1
    tops = np.repeat(np.arange(len(share)), counts)
    assert run(detector, observations(np.zeros(W, bool), tops)) == []
    # Flooring instead would have alarmed: one message against an expected count of ~0.
    epsilon = 1e-6
    floored = np.maximum(share, epsilon) * W
    observed = np.bincount(tops, minlength=len(share))
    assert ((observed - floored) ** 2 / floored).sum() > 1000


def test_merge_plan_pools_small_bins() -> None:
    assert merge_plan([100.0, 50.0, 2.0, 1.0]) == [[0], [3, 2, 1]]
    assert merge_plan([3.0, 6.0, 7.0]) == [[2], [0, 1]]
    assert merge_plan([10.0, 5.0, 20.0]) == [[1], [0], [2]]  # nothing below 5: unchanged
    assert len(merge_plan([1.0, 1.0])) == 1  # untestable: too few messages for any test
    assert not CategoryMixDetector(4, [0.5, 0.5], ["a", "b"]).testable


@pytest.mark.parametrize("reference_count", [300, 3_000])
def test_category_mix_false_alarms_stay_at_alpha_with_a_sampled_reference(reference_count: int) -> None:
    """The reference mix is itself a sample of ``reference_count`` products. Many references, each
    counted on that many draws from the true mix, and in-control windows from the same true mix: the
    detector must reject at its alpha (here 1e-3, to count enough), not at the rate a goodness of
    fit against the sampled shares as if exact reaches (measured here: 0.58 and 1.19 x alpha for the
    two-sample test, 218 and 4.9 x alpha for the shares taken as exact, at 300 and 3,000 products)."""
    rng = np.random.default_rng(5)
    alpha, references, windows = 1e-3, 200, 1_000
    rejected = {"two-sample": 0, "shares as exact": 0}
    for _ in range(references):
        reference = rng.multinomial(reference_count, ELO7_SHARE) / reference_count
        window_counts = rng.multinomial(W, ELO7_SHARE, size=windows)
        for name, count in (("two-sample", reference_count), ("shares as exact", None)):
            detector = CategoryMixDetector(W, list(reference), ELO7_LABELS, alpha=alpha, reference_count=count)
            rejects = detector.rejects(window_counts)
            rejected[name] += int(rejects.sum())
            # The vectorized decision is the one the detector makes window by window.
            statistic, p_value = detector.test(window_counts[0])
            assert (p_value <= alpha) == rejects[0]
            assert (statistic >= detector.critical_chi_square(len(detector.bins) - 1)) == rejects[0]
    total = references * windows
    # 200,000 windows at alpha: ~200 expected; binomial sd ~14, and the chi-square is approximate.
    assert rejected["two-sample"] <= 2 * alpha * total, rejected
    assert rejected["two-sample"] >= alpha * total / 4, rejected  # calibrated, not merely conservative
    assert rejected["shares as exact"] >= 2.5 * rejected["two-sample"], rejected


def test_category_mix_two_sample_statistic_is_the_contingency_tables() -> None:
    from scipy.stats import chi2_contingency

    observed = np.array([230.0, 120.0, 90.0, 40.0, 20.0])
    reference = np.array([150.0, 60.0, 55.0, 20.0, 15.0])
    table_statistic = chi2_contingency(np.stack([observed, reference]), correction=False).statistic
    assert float(mix_statistic(observed, reference / reference.sum(), int(reference.sum()))) == pytest.approx(
        table_statistic)
    with pytest.raises(ValueError, match="reference_count"):
        CategoryMixDetector(W, ELO7_SHARE, ELO7_LABELS, reference_count=0)


def test_category_mix_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="2 entries but there are 3 labels"):
        CategoryMixDetector(SMALL_W, [0.5, 0.5], ["a", "b", "c"])
    detector = CategoryMixDetector(SMALL_W, [0.5, 0.5], ["a", "b"])
    with pytest.raises(ValueError, match="top_index 2 of product 'p0'"):
        run(detector, observations(np.zeros(1, bool), np.array([2])))


# -- monitor and false alarms -------------------------------------------------------------------------


def test_monitor_from_calibration() -> None:
    monitor = DriftMonitor.from_calibration(calibration(), ELO7_LABELS, AlertContext(model_version="v7"), window=W,
                                            retrain_after=3)
    assert monitor.partitions == {}  # detectors are made per partition, on its first message
    rng = np.random.default_rng(3)
    # Outliers at 10x and Bebê-heavy mix at once: both detectors speak within the first window.
    tops = rng.choice(len(ELO7_SHARE), size=W, p=[0.2, 0.2, 0.5, 0.05, 0.03, 0.02])
    alerts = [a for obs in observations(rng.random(W) < 10 * P0, tops) for a in monitor.update(obs)]
    assert sorted(a.type for a in alerts) == ["category_mix", "embedding_drift"]
    assert all(a.model_version == "v7" and a.partition == 0 for a in alerts)
    outlier, category = monitor.partitions[0].detectors
    assert isinstance(outlier, OutlierRateDetector) and isinstance(category, CategoryMixDetector)
    assert outlier.p0 == pytest.approx(P0) and outlier.critical == C
    embedding = next(a for a in alerts if isinstance(a, EmbeddingDriftAlert))
    assert embedding.thresholds.tau == TAU
    no_mix = DriftMonitor.from_calibration(calibration(centroid_share=[], category_share=[]), [], AlertContext())
    no_mix.update(next(observations(np.zeros(1, bool))))
    assert [type(d) for d in no_mix.partitions[0].detectors] == [OutlierRateDetector]
    mismatch = calibration(category_share=[0.5, 0.5])
    with pytest.raises(ValueError, match=f"2 entries but there are {len(ELO7_LABELS)} labels"):  # at construction
        DriftMonitor.from_calibration(mismatch, ELO7_LABELS, AlertContext())


def test_false_alarm_rate_under_one_per_100k_in_control() -> None:
    rng = np.random.default_rng(5)
    held_out, messages = 50_000, 1_000_000
    flags = rng.random(held_out) < P0
    tops = rng.choice(len(ELO7_SHARE), size=held_out, p=ELO7_SHARE)
    result = simulate_false_alarms(flags, tops, window=W, p0=P0, n_messages=messages, seed=1)
    assert result.windows == messages // W and result.messages == messages
    assert result.per_100k < 1.0
    # The simulation can fail: a stream at 5 x p0 alarms in most windows.
    hot = rng.random(held_out) < 5 * P0
    assert simulate_false_alarm_rate(hot, None, window=W, p0=P0, n_messages=200_000) > 100
