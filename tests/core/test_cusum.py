"""The sequential embedding-drift test: integer Bernoulli CUSUM, its exact run length, the monitor's
``embedding_drift_sequential`` alerts and their ids, and real distances of a category left out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from stream_app.core.drift import (
    AlertContext,
    BernoulliCusum,
    CusumChannel,
    DriftMonitor,
    Observation,
    PartitionWindows,
    SequentialDriftAlert,
    SequentialOutlierDetector,
    alert_id,
    average_run_length,
    default_channels,
    design_cusum,
)
from stream_app.core.drift.cusum import cusum_alarm_count, cusum_paths_first_alarm
from stream_app.messages import drift_alert_adapter
from stream_app.schemas import SCHEMA_DIR

T0 = datetime(2024, 1, 1, tzinfo=UTC)
P0 = 0.01
DESIGN = design_cusum(P0)  # the worker's default for a bundle calibrated at the 0.99 quantile
CALIBRATION = SimpleNamespace(tau=0.4, quantile=1 - P0, centroid_share=[1 / 8] * 8, category_share=[],
                              n_calibration=1000)
CONTEXT = AlertContext(model_version="v1", group_id="g", topic="products", worker_id="pod-a")


# -- the statistic ------------------------------------------------------------------------------------


def test_default_design_matches_the_module_docstring() -> None:
    d = DESIGN
    assert (d.step, d.threshold) == (54, 731)
    assert d.p1 == pytest.approx(0.0298, abs=1e-4) and d.h == pytest.approx(14.92, abs=0.01)
    assert d.arl_at_guard >= d.target_arl == 2_000_000 and d.guard == 1.3
    assert d.arl(1.3 * P0) == pytest.approx(d.arl_at_guard)
    assert average_run_length(1.3 * P0, d.step, d.threshold - 1) < d.target_arl  # the smallest such threshold
    assert d.arl_at_p0 > 4e8
    assert round(d.arl(3 * P0)) == 1080 and round(d.arl(2.5 * P0)) == 1787
    assert -(-d.threshold // d.step) == 14  # uninterrupted outliers to the first alarm


def test_exact_run_length_matches_simulation() -> None:
    d = design_cusum(0.05, shift=3, target_arl=500, guard=1.0)
    rng = np.random.default_rng(3)
    first = np.concatenate([cusum_paths_first_alarm(rng.random((1000, 8000), dtype=np.float32) < 0.05, d.step,
                                                    d.threshold) for _ in range(4)])
    assert (first >= 0).all()
    assert (first + 1).mean() == pytest.approx(d.arl_at_p0, rel=0.04)  # 4000 runs: standard error ~1.6%


def test_no_alarm_in_control_over_twenty_million_messages_and_the_calibrated_rate_at_the_guard() -> None:
    rng = np.random.default_rng(20240101)

    def alarms_at(rate: float) -> tuple[int, np.ndarray]:  # 100 streams of 200,000 messages, in chunks
        chunks = [rng.random((20, 200_000), dtype=np.float32) < rate for _ in range(5)]
        return sum(cusum_alarm_count(c, DESIGN.step, DESIGN.threshold) for c in chunks), chunks[0]

    assert alarms_at(P0)[0] == 0  # expected 20M / 4.2e8 = 0.05
    # At the calibration rate (1.3 x p0) the alarm rate is 1 / ARL: ~9.9 alarms in 20M messages.
    alarms, at_guard = alarms_at(DESIGN.guard * P0)
    assert 2 <= alarms <= 21, alarms  # Poisson(9.9): outside with probability < 0.5%
    # The scalar detector makes the same decisions as the vectorized one.
    short = at_guard[:4, :50_000]
    cusum = BernoulliCusum(DESIGN)
    assert sum(cusum.update(bool(x)) is not None for row in short for x in row) == cusum_alarm_count(
        short, DESIGN.step, DESIGN.threshold)


def test_alarms_on_three_times_the_rate_as_fast_as_the_exact_run_length() -> None:
    rng = np.random.default_rng(11)
    flags = rng.random((2000, 8000), dtype=np.float32) < 3 * P0
    first = cusum_paths_first_alarm(flags, DESIGN.step, DESIGN.threshold)
    assert (first >= 0).all()
    assert (first + 1).mean() == pytest.approx(DESIGN.arl(3 * P0), rel=0.06)
    cusum = BernoulliCusum(DESIGN)
    alarm = next(a for x in flags[0] if (a := cusum.update(bool(x))) is not None)
    assert alarm.statistic >= DESIGN.threshold and alarm.run_outliers >= 14


def test_runs_restarts_and_reset() -> None:
    cusum = BernoulliCusum(DESIGN)
    assert cusum.update(False) is None and (cusum.statistic, cusum.run_length) == (0, 0)  # no run at 0
    cusum.update(True)
    assert (cusum.statistic, cusum.run_length, cusum.run_outliers) == (54, 1, 1)
    for _ in range(10):
        cusum.update(False)
    assert (cusum.statistic, cusum.run_length, cusum.run_outliers) == (44, 11, 1)
    for _ in range(44):
        cusum.update(False)
    assert (cusum.statistic, cusum.run_length, cusum.run_outliers) == (0, 0, 0)  # back at 0: the run ended
    alarms = [cusum.update(True) for _ in range(14)]
    assert alarms[:13] == [None] * 13
    assert (alarms[13].statistic, alarms[13].run_length, alarms[13].run_outliers) == (756, 14, 14)
    assert (cusum.statistic, cusum.run_length) == (0, 0)  # restarted after the alarm
    cusum.update(True)
    cusum.reset()
    assert (cusum.statistic, cusum.run_length, cusum.run_outliers) == (0, 0, 0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"p0": 0.0}, "p0"), ({"p0": 0.01, "shift": 1.0}, "shift"), ({"p0": 0.5, "shift": 2.0}, "shift"),
    ({"p0": 0.01, "guard": 3.0}, "guard"), ({"p0": 0.01, "target_arl": 1}, "target_arl"),
])
def test_design_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        design_cusum(**kwargs)


# -- the monitor's sequential detector ----------------------------------------------------------------


def stream(flags: list[bool] | np.ndarray, first_offset: int = 0, partition: int = 0):
    for i, flag in enumerate(flags):
        offset = first_offset + i
        yield Observation(f"p{offset}", 0.9 if flag else 0.1, offset % 8, bool(flag), 0, partition, offset,
                          T0 + timedelta(seconds=offset), T0 + timedelta(seconds=offset, milliseconds=5))


def feed(monitor: DriftMonitor, flags, first_offset: int = 0) -> list:
    return [r for obs in stream(flags, first_offset) for r in monitor.update(obs)]


def monitor() -> DriftMonitor:
    return DriftMonitor.from_calibration(CALIBRATION, [], CONTEXT, window=500, sequential=True)


def pattern(gap: int, length: int, phase: int = 0) -> np.ndarray:
    """One outlier every ``gap`` messages (the first at ``phase``)."""
    return (np.arange(length) % gap) == phase


def expected_alarm(flags: np.ndarray) -> int:
    cusum = BernoulliCusum(DESIGN)
    return next(i for i, x in enumerate(flags) if cusum.update(bool(x)) is not None)


@pytest.fixture(scope="module")
def drift_schema() -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / "drift.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_sequential_alert_names_its_run_and_validates(drift_schema: Draft202012Validator) -> None:
    # 1,000 clean messages, then an outlier every 27 (3.7 x p0): the window test (c = 20 of 500) stays
    # quiet, the CUSUM accumulates across the window boundary at 1,500.
    flags = np.concatenate([np.zeros(1000, bool), pattern(27, 1000)])
    at = expected_alarm(flags)
    assert 1500 < at < 2000
    records = feed(monitor(), flags)
    assert [r.type for r in records] == ["embedding_drift_sequential"]
    alert = records[0]
    assert isinstance(alert, SequentialDriftAlert)
    assert (alert.run_start_offset, alert.alarm_offset) == (1000, at)
    assert alert.alert_id == alert_id("firing", "embedding_drift_sequential", "v1", "g", "products", 0, 1000, at + 1)
    assert alert.n == at - 1000 + 1 and alert.flagged == int(flags[1000 : at + 1].sum())
    assert alert.expected == pytest.approx(alert.n * P0)
    assert alert.statistic >= alert.thresholds.threshold == pytest.approx(DESIGN.h)
    assert alert.thresholds.expected_rate == pytest.approx(P0)
    assert alert.thresholds.calibrated_rate == pytest.approx(0.013)
    assert alert.thresholds.in_control_arl >= 2e6
    assert (alert.thresholds.cut, alert.thresholds.quantile) == (0.4, pytest.approx(0.99))
    assert alert.window.start_offset == at // 500 * 500 and alert.window.last_offset == at
    assert alert.flagged_sample == [f"p{o}" for o in range(1000, 1270, 27)]
    assert alert.recommendation == "investigate"
    doc = json.loads(alert.model_dump_json())
    drift_schema.validate(doc)
    assert drift_alert_adapter().validate_json(alert.model_dump_json()) == alert


def test_a_replay_reproduces_the_id_when_it_restarts_at_or_before_the_run_start() -> None:
    flags = np.concatenate([np.zeros(1000, bool), pattern(27, 1300)])  # ends before a second alarm
    [original] = feed(monitor(), flags)
    for resume in (500, 1000):  # block starts at or before the run start (1000)
        [again] = feed(monitor(), flags[resume:], first_offset=resume)
        assert (again.alert_id, again.alarm_offset, again.n) == (original.alert_id, original.alarm_offset, original.n)
    # Resumed at 1500, inside the run: less evidence, a later alarm with its own run start and id.
    [late] = feed(monitor(), flags[1500:], first_offset=1500)
    assert late.run_start_offset >= 1500 and late.alarm_offset > original.alarm_offset
    assert late.alert_id != original.alert_id
    # Resumed mid-block at 1200: the statistic starts at the next block start, as the windows do.
    [mid] = feed(monitor(), flags[1200:], first_offset=1200)
    assert mid.run_start_offset >= 1500


def test_quiet_while_the_window_test_reports_then_ahead_of_it_at_low_rates() -> None:
    flags = np.concatenate([
        pattern(19, 500),  # 1 in 19: the window test reaches c = 20 before the CUSUM's threshold
        np.zeros(500, bool),  # a clean window resolves it
        pattern(30, 1500),  # 1 in 30: under 17 outliers per window, never the window test; the CUSUM does
    ])
    records = feed(monitor(), flags)
    assert [(r.status, r.type) for r in records] == [
        ("firing", "embedding_drift"), ("resolved", "embedding_drift"), ("firing", "embedding_drift_sequential")]
    sequential = records[2]
    assert sequential.run_start_offset == 1000  # the statistic was held at 0 while the window test reported
    assert sequential.alarm_offset == 1000 + expected_alarm(flags[1000:])
    # Without the window test's alert the CUSUM would have alarmed in the first window.
    assert expected_alarm(flags[:500]) < 500


def test_at_most_one_sequential_alert_per_window_and_a_backward_jump_restarts() -> None:
    # Alone (nothing keeps it quiet) on a stream of outliers the CUSUM crosses every 14 messages; it
    # alerts once per window and restarts silently at the other crossings.
    windows = PartitionWindows(0, 500, [SequentialOutlierDetector(CusumChannel(DESIGN, 1 - P0))])
    alerts = [r for obs in stream(np.ones(1000, bool)) for r in windows.feed(obs.offset, obs.processed_at, obs)]
    assert [(a.run_start_offset, a.alarm_offset) for a in alerts] == [(0, 13), (490, 503)]
    m = monitor()
    flags = pattern(30, 500 * 6)
    first = feed(m, flags)
    assert [r.type for r in first] == ["embedding_drift_sequential"] * len(first) and len(first) >= 2
    assert len({r.window.start_offset for r in first}) == len(first)
    again = feed(m, flags[:1000])  # replayed from 0 in the same process: same alerts, same ids
    assert [r.alert_id for r in again] == [r.alert_id for r in first if r.alarm_offset < 1000]


def test_monitor_builds_the_sequential_detector_only_when_asked() -> None:
    assert len(DriftMonitor.from_calibration(CALIBRATION, [], CONTEXT).partition(0).detectors) == 1
    assert len(monitor().partition(0).detectors) == 2
    with pytest.raises(ValueError, match=r"quantile 0\.99"):
        DriftMonitor.from_calibration(CALIBRATION, [], CONTEXT, sequential=[CusumChannel(design_cusum(0.02), 0.98)])
    with pytest.raises(ValueError, match="p0"):
        CusumChannel(design_cusum(0.02), 0.99)


def test_the_near_channel_sees_a_shift_below_tau() -> None:
    """Products a little farther out than usual, none beyond tau: only the near channel (0.9 quantile)."""
    calibration = SimpleNamespace(**vars(CALIBRATION), distance_quantiles={"0.5": 0.1, "0.9": 0.3, "0.99": 0.4})
    tau_channel, near = default_channels(calibration)
    assert (tau_channel.quantile, tau_channel.cut, near.quantile, near.cut) == (0.99, None, 0.9, 0.3)
    assert (near.design.step, near.design.threshold) == (7, 252) and near.design.arl_at_guard >= 2e6
    assert near.design.p1 == pytest.approx(0.153, abs=1e-3) and near.design.arl_at_p0 > 4e8
    m = DriftMonitor.from_calibration(calibration, [], CONTEXT, window=500, sequential=True)
    gap = pattern(4, 2000)  # one message in 4 at distance 0.35: beyond the near cut, not beyond tau
    observations = [Observation(f"p{i}", 0.35 if g else 0.1, 0, False, 0, 0, i, None, T0) for i, g in enumerate(gap)]
    records = [r for obs in observations for r in m.update(obs)]
    assert [r.type for r in records] and {r.type for r in records} == {"embedding_drift_sequential"}
    alert = records[0]
    assert (alert.thresholds.cut, alert.thresholds.quantile) == (0.3, 0.9)
    assert alert.run_start_offset == 0 and alert.flagged == int(gap[: alert.alarm_offset + 1].sum())
    cusum = BernoulliCusum(near.design)
    assert alert.alarm_offset == next(i for i, g in enumerate(gap) if cusum.update(bool(g)) is not None)


# -- real distances: a category the drift index never saw ----------------------------------------------


def test_alarms_on_real_distances_of_a_left_out_category(test_bundle: Path) -> None:
    """The test bundle's frozen encoder, a drift index re-fit without one category (see
    tests/export/test_drift_eval.py): that category's real distances move the CUSUM, in-distribution
    ones do not."""
    from tests.export.test_drift_eval import leave_out_distances

    real = leave_out_distances(test_bundle)  # cut at the 0.75 quantile of held-out kept rows: p0 = 0.25
    assert real.new_outlier.mean() > 1.5 * real.in_outlier.mean()
    design = design_cusum(real.p0, shift=1.5, guard=1.1)
    rng = np.random.default_rng(7)
    # In distribution (held-out rows of the kept categories, resampled): no alarm in 200,000 messages.
    quiet = real.in_outlier[rng.integers(0, len(real.in_outlier), size=(10, 20_000))]
    assert cusum_alarm_count(quiet, design.step, design.threshold) == 0  # ARL at p0: 1.9e8
    # The left-out category at half the stream: every replay alarms (median ~400 messages).
    novel = rng.random((50, 12_000)) < 0.5
    flags = np.where(novel, real.new_outlier[rng.integers(0, len(real.new_outlier), size=novel.shape)],
                     real.in_outlier[rng.integers(0, len(real.in_outlier), size=novel.shape)])
    first = cusum_paths_first_alarm(flags, design.step, design.threshold)
    assert (first >= 0).all()
    assert np.median(first + 1) < 2000
