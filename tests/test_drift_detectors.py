"""Drift detectors: exact binomial critical counts, windowed alerts, category mix, false alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from stream_app.core.drift import (
    AlertContext,
    CategoryMixAlert,
    CategoryMixDetector,
    DriftMonitor,
    DriftResolved,
    EmbeddingDriftAlert,
    Observation,
    OutlierRateDetector,
    PartitionWindows,
    alert_id,
    critical_count,
    simulate_false_alarm_rate,
    simulate_false_alarms,
    tail_probability,
)
from stream_app.core.drift.category_mix import merge_plan

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ELO7_SHARE = [0.46, 0.23, 0.18, 0.07, 0.035, 0.025]
ELO7_LABELS = ["Lembrancinhas", "Decoração", "Bebê", "Papel e Cia", "Outros", "Bijuterias e Jóias"]


def observations(outliers: np.ndarray, tops: np.ndarray | None = None, k: int = 8, partitions: int = 1):
    """Observations with the given outlier flags; offsets dense per partition (round robin)."""
    tops = np.zeros(len(outliers), dtype=int) if tops is None else tops
    for i, (flag, top) in enumerate(zip(outliers, tops)):
        yield Observation(
            product_id=f"p{i}",
            distance=0.9 if flag else 0.2,
            nearest_centroid=i % k,
            outlier=bool(flag),
            top_index=int(top),
            partition=i % partitions,
            offset=i // partitions,
            event_time=T0 + timedelta(seconds=i),
            processed_at=T0 + timedelta(seconds=i, milliseconds=5),
        )


def run(detector, stream, firing_only: bool = True) -> list[tuple[int, object]]:
    """(index of the observation that raised it, record) for every firing alert (and resolution unless
    ``firing_only``), feeding one partition's offset-aligned windows of the detector's size."""
    windows = PartitionWindows(0, detector.window_size, [detector])
    out = []
    for i, obs in enumerate(stream):
        assert obs.partition == 0
        out += [(i, r) for r in windows.feed(obs.offset, obs.processed_at, obs)]
    return [(i, r) for i, r in out if not firing_only or r.status == "firing"]


# -- binomial ---------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
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


@settings(max_examples=100, deadline=None)
@given(window=st.integers(10, 2000), p0=st.floats(1e-3, 0.2), a1=st.floats(1e-9, 0.1), a2=st.floats(1e-9, 0.1))
def test_critical_count_is_monotone_in_alpha(window: int, p0: float, a1: float, a2: float) -> None:
    lo, hi = sorted((a1, a2))
    assert critical_count(window, p0, lo) >= critical_count(window, p0, hi)


def test_default_figures_in_the_docstring() -> None:
    assert critical_count(500, 0.01, 1e-6) == 20
    assert tail_probability(20, 500, 0.01) == pytest.approx(2.77e-7, rel=0.01)
    assert tail_probability(20, 500, 0.02) == pytest.approx(0.00313, rel=0.01)  # 2 x p0: 0.63 / 100k msgs
    assert tail_probability(20, 500, 0.05) == pytest.approx(0.873, rel=0.01)
    assert tail_probability(20, 500, 0.10) > 0.9999


def test_bad_parameters_name_the_argument() -> None:
    with pytest.raises(ValueError, match="alpha"):
        critical_count(500, 0.01, 0.0)
    with pytest.raises(ValueError, match="p0"):
        critical_count(500, 1.0, 1e-6)
    with pytest.raises(ValueError, match="unreachable"):
        OutlierRateDetector(window_size=3, expected_rate=0.01, alpha=1e-9)


# -- outlier-rate detector ----------------------------------------------------------------------------


def test_no_alert_on_in_control_stream() -> None:
    rng = np.random.default_rng(20240101)
    detector = OutlierRateDetector(window_size=500, expected_rate=0.01, alpha=1e-6, reference_centroid_share=[1 / 8] * 8)
    flags = rng.random(500 * 400) < 0.01  # 400 windows of Bernoulli(p0)
    assert run(detector, observations(flags)) == []
    assert detector.consecutive_windows == 0


def test_alerts_in_first_window_at_ten_times_the_rate() -> None:
    rng = np.random.default_rng(7)
    context = AlertContext(model_version="v1", group_id="g", topic="products", worker_id="pod-a")
    detector = OutlierRateDetector(window_size=500, expected_rate=0.01, alpha=1e-6, context=context, tau=0.4)
    flags = rng.random(500 * 2) < 0.10
    alerts = run(detector, observations(flags))
    assert alerts, "no alert at 10 x the expected outlier rate"
    index, alert = alerts[0]
    assert index < 500  # decided inside the first window, at the c-th outlier
    assert isinstance(alert, EmbeddingDriftAlert)
    assert alert.outliers == alert.critical_count == 20 and alert.n == index + 1
    assert alert.expected == pytest.approx(alert.n * 0.01)
    assert alert.p_value == pytest.approx(binom.sf(19, alert.n, 0.01))
    assert alert.recommendation == "investigate" and alert.consecutive_windows == 1
    assert alert.model_version == "v1" and alert.type == "embedding_drift" and alert.status == "firing"
    assert (alert.group_id, alert.topic, alert.partition, alert.worker_id) == ("g", "products", 0, "pod-a")
    assert alert.alert_id == alert_id("firing", "embedding_drift", "v1", "g", "products", 0, 0, 500)
    assert alert.thresholds.model_dump() == {"tau": 0.4, "expected_rate": 0.01, "alpha": 1e-6, "window_size": 500,
                                             "critical_count": 20}
    assert alert.outlier_sample == [f"p{i}" for i in np.flatnonzero(flags[: index + 1])[:10]]
    # Window: offsets [0, 500) of partition 0, seen up to the deciding message, first at T0.
    assert (alert.window.start_offset, alert.window.end_offset, alert.window.last_offset) == (0, 500, index)
    assert alert.window.observed == alert.n and alert.window.dead_letters == 0
    assert alert.window.first_event_time == T0
    assert alert.window.last_event_time == T0 + timedelta(seconds=index)
    # The alert is the drift topic's message: it round-trips through JSON.
    assert EmbeddingDriftAlert.model_validate_json(alert.model_dump_json()) == alert


def test_one_alert_per_window_and_investigate_then_retrain() -> None:
    detector = OutlierRateDetector(window_size=100, expected_rate=0.01, alpha=1e-4, retrain_after=3)
    flags = np.ones(100 * 5, dtype=bool)  # every message an outlier: every window drifts
    alerts = run(detector, observations(flags))
    assert [i // 100 for i, _ in alerts] == [0, 1, 2, 3, 4]  # exactly one per window
    assert [a.consecutive_windows for _, a in alerts] == [1, 2, 3, 4, 5]
    assert [a.recommendation for _, a in alerts] == ["investigate", "investigate", "retrain", "retrain", "retrain"]


def test_clean_window_resets_the_streak() -> None:
    detector = OutlierRateDetector(window_size=100, expected_rate=0.01, alpha=1e-4, retrain_after=2)
    drifting, clean = np.ones(100, dtype=bool), np.zeros(100, dtype=bool)
    flags = np.concatenate([drifting, clean, drifting, drifting])
    records = run(detector, observations(flags), firing_only=False)
    assert [(i // 100, r.status, getattr(r, "consecutive_windows", None)) for i, r in records] == [
        (0, "firing", 1),
        (1, "resolved", None),  # at the end of the clean window
        (2, "firing", 1),
        (3, "firing", 2),
    ]
    assert [r.recommendation for _, r in records if r.status == "firing"] == ["investigate", "investigate", "retrain"]
    resolved = records[1][1]
    assert isinstance(resolved, DriftResolved) and records[1][0] == 199
    assert resolved.resolves == records[0][1].alert_id and resolved.drifted_windows == 1
    assert (resolved.window.start_offset, resolved.window.end_offset) == (100, 200)
    assert resolved.statistic == 0 and resolved.n == 100


def test_moved_centroids_rank_the_gainers() -> None:
    # Reference: 8 centroids equally likely; the drifting window piles onto centroid 5.
    detector = OutlierRateDetector(window_size=200, expected_rate=0.01, alpha=1e-6, reference_centroid_share=[1 / 8] * 8)
    stream = [Observation(f"p{i}", 0.9, 5 if i % 2 else i % 8, True, 0, 0, i, None, T0) for i in range(200)]
    [(_, alert)] = run(detector, stream)
    assert alert.window.first_event_time is None
    top = alert.top_moved_centroids[0]
    assert top.centroid == 5 and top.reference_share == pytest.approx(0.125)
    assert top.count > top.expected_count


# -- category mix -------------------------------------------------------------------------------------


def test_category_mix_quiet_in_control_and_alerts_on_a_shift() -> None:
    rng = np.random.default_rng(11)
    detector = CategoryMixDetector(500, ELO7_SHARE, ELO7_LABELS, alpha=1e-6, retrain_after=2,
                                   context=AlertContext(model_version="v1"))
    in_control = rng.choice(6, size=500 * 100, p=ELO7_SHARE)
    # Then a strong shift: Bebê (2) collapses, Papel e Cia (3) and Outros (4) rise.
    shifted_share = [0.40, 0.23, 0.05, 0.20, 0.10, 0.02]
    shifted = rng.choice(6, size=500 * 3, p=shifted_share)
    tops = np.concatenate([in_control, shifted])
    alerts = run(detector, observations(np.zeros(len(tops), bool), tops))
    assert [i // 500 for i, _ in alerts] == [100, 101, 102]  # quiet in control, every shifted window drifts
    assert [a.recommendation for _, a in alerts] == ["investigate", "retrain", "retrain"]
    alert = alerts[0][1]
    assert isinstance(alert, CategoryMixAlert) and alert.p_value <= 1e-6 and alert.n == 500
    assert alert.degrees_of_freedom == alert.thresholds.degrees_of_freedom == 5
    assert alert.thresholds.critical_chi_square == pytest.approx(35.9, abs=0.1)  # as in the module docstring
    assert alert.chi_square >= alert.thresholds.critical_chi_square
    assert {c.name for c in alert.categories} == set(ELO7_LABELS)
    assert alert.categories[0].name in {"Bebê", "Papel e Cia", "Outros"}
    assert sum(c.count for c in alert.categories) == 500
    assert CategoryMixAlert.model_validate_json(alert.model_dump_json()) == alert


def test_zero_reference_shares_are_merged_not_floored() -> None:
    # Two labels never seen in calibration: a single message of one of them must not alarm.
    share = [0.5, 0.3, 0.2, 0.0, 0.0]
    detector = CategoryMixDetector(500, share, list("abcde"), alpha=1e-6)
    assert detector.bins == [[1], [0], [3, 4, 2]]  # the empty labels pool with the smallest real one
    tops = np.array([0] * 250 + [1] * 150 + [2] * 99 + [3])
    assert run(detector, observations(np.zeros(500, bool), tops)) == []
    # Flooring instead would have alarmed: one message against an expected count of ~0.
    floored = np.array([250, 150, 100, 1e-6 * 500, 1e-6 * 500])
    observed = np.array([250, 150, 99, 1, 0])
    assert ((observed - floored) ** 2 / floored).sum() > 1000


def test_merge_plan_pools_small_bins() -> None:
    assert merge_plan([100.0, 50.0, 2.0, 1.0]) == [[0], [3, 2, 1]]
    assert merge_plan([3.0, 6.0, 7.0]) == [[2], [0, 1]]
    assert merge_plan([10.0, 5.0, 20.0]) == [[1], [0], [2]]  # nothing below 5: unchanged
    assert len(merge_plan([1.0, 1.0])) == 1  # untestable: too few messages for any test
    assert not CategoryMixDetector(4, [0.5, 0.5], ["a", "b"]).testable


def test_category_mix_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="2 entries but there are 3 labels"):
        CategoryMixDetector(100, [0.5, 0.5], ["a", "b", "c"])
    detector = CategoryMixDetector(100, [0.5, 0.5], ["a", "b"])
    with pytest.raises(ValueError, match="top_index 2 of product 'p0'"):
        run(detector, observations(np.zeros(1, bool), np.array([2])))


# -- monitor and false alarms -------------------------------------------------------------------------


def test_monitor_from_calibration() -> None:
    calibration = SimpleNamespace(tau=0.4, quantile=0.99, centroid_share=[1 / 8] * 8, category_share=ELO7_SHARE)
    monitor = DriftMonitor.from_calibration(calibration, ELO7_LABELS, AlertContext(model_version="v7"), window=500,
                                            retrain_after=3)
    assert monitor.partitions == {}  # detectors are made per partition, on its first message
    rng = np.random.default_rng(3)
    # Outliers at 10x and Bebê-heavy mix at once: both detectors speak within the first window.
    tops = rng.choice(6, size=500, p=[0.2, 0.2, 0.5, 0.05, 0.03, 0.02])
    alerts = [a for obs in observations(rng.random(500) < 0.1, tops) for a in monitor.update(obs)]
    assert sorted(a.type for a in alerts) == ["category_mix", "embedding_drift"]
    assert all(a.model_version == "v7" and a.partition == 0 for a in alerts)
    outlier, category = monitor.partitions[0].detectors
    assert isinstance(outlier, OutlierRateDetector) and isinstance(category, CategoryMixDetector)
    assert outlier.p0 == pytest.approx(0.01) and outlier.critical == 20 and outlier.thresholds.tau == 0.4
    no_mix = DriftMonitor.from_calibration(SimpleNamespace(quantile=0.99, centroid_share=[], category_share=[]), [],
                                           AlertContext())
    no_mix.update(next(observations(np.zeros(1, bool))))
    assert [type(d) for d in no_mix.partitions[0].detectors] == [OutlierRateDetector]
    with pytest.raises(ValueError, match="2 entries but there are 6 labels"):  # at construction, not later
        DriftMonitor.from_calibration(SimpleNamespace(quantile=0.99, category_share=[0.5, 0.5]), ELO7_LABELS,
                                      AlertContext())


def test_false_alarm_rate_under_one_per_100k_in_control() -> None:
    rng = np.random.default_rng(5)
    flags = rng.random(50_000) < 0.01
    tops = rng.choice(6, size=50_000, p=ELO7_SHARE)
    result = simulate_false_alarms(flags, tops, window=500, p0=0.01, n_messages=1_000_000, seed=1)
    assert result.windows == 2000 and result.messages == 1_000_000
    assert result.per_100k < 1.0
    # The simulation can fail: a stream at 5 x p0 alarms in most windows.
    hot = rng.random(50_000) < 0.05
    assert simulate_false_alarm_rate(hot, None, window=500, p0=0.01, n_messages=200_000) > 100
