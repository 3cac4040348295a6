"""Every drift detector against the one Detector API (stream_app.core.drift.detector).

The same replays go through each detector: in-distribution inputs decide nothing, a sustained shift
fires, ``reset()`` returns to the initial state and decisions are deterministic. The streams are
offsets 0, 1, 2, ... of one partition with a ``WindowEnd`` after each aligned window, as
``PartitionWindows`` feeds them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest

import stream_app.core.drift as drift
from stream_app.core.bundle import DriftCalibration
from stream_app.core.drift import (
    REWIND,
    CategoryMixDetector,
    Decision,
    Detector,
    DetectorInput,
    Observation,
    OutlierRateDetector,
    SequentialOutlierDetector,
    WindowEnd,
    default_channels,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
W = 200
P0 = 0.01  # beyond tau (the 0.99 quantile)
NEAR = 0.1  # beyond the near cut (the 0.9 quantile)
TAU, NEAR_CUT = 0.4, 0.3
SHARE = [0.46, 0.23, 0.18, 0.07, 0.035, 0.025]
SHIFTED_SHARE = [0.2, 0.2, 0.05, 0.35, 0.1, 0.1]
LABELS = [f"label-{i}" for i in range(len(SHARE))]
CALIBRATION = DriftCalibration(k=8, quantile=1 - P0, tau=TAU, distance_quantiles={"0.9": NEAR_CUT, "0.99": TAU},
                               centroid_share=[1 / 8] * 8, category_share=SHARE, n_fit=1000, n_calibration=1000)


@dataclass(frozen=True)
class Stream:
    """How the messages of a stretch of windows are drawn: outlier (beyond tau) rate and top-label mix."""

    outlier_rate: float = P0
    share: Sequence[float] = tuple(SHARE)


IN_CONTROL = Stream()


@dataclass(frozen=True)
class Case:
    make: Callable[[], Detector]
    shift: Stream  # a shift this detector is built to see
    resolves: bool  # a clean window after a drifting one ends the episode


CASES = {
    "outlier_window": Case(lambda: OutlierRateDetector(window_size=W, expected_rate=P0, alpha=1e-6),
                           Stream(outlier_rate=10 * P0), resolves=True),
    "category_mix": Case(lambda: CategoryMixDetector(W, SHARE, LABELS, alpha=1e-6),
                         Stream(share=tuple(SHIFTED_SHARE)), resolves=True),
    "cusum": Case(lambda: SequentialOutlierDetector(default_channels(CALIBRATION)),
                  Stream(outlier_rate=5 * P0), resolves=False),
}


def inputs(stretches: Sequence[tuple[Stream, int]], seed: int = 0) -> list[DetectorInput]:
    """Observations at offsets 0, 1, ... drawn stretch by stretch ((stream, windows) each), with a
    ``WindowEnd`` after every window. In distribution a message is beyond the near cut with
    probability NEAR and beyond tau with P0, as calibrated."""
    rng = np.random.default_rng(seed)
    out: list[DetectorInput] = []
    offset = 0
    for stream, windows in stretches:
        for _ in range(windows * W):
            u = rng.random()
            if u < stream.outlier_rate:
                distance = TAU + (1 - TAU) * rng.random()
            elif u < max(NEAR, stream.outlier_rate + NEAR - P0):
                distance = NEAR_CUT + (TAU - NEAR_CUT) * rng.random()
            else:
                distance = NEAR_CUT * rng.random()
            top = int(rng.choice(len(stream.share), p=stream.share))
            out.append(Observation(f"p{offset}", distance, offset % 8, distance > TAU, top, 0, offset, None, T0))
            offset += 1
            if offset % W == 0:
                out.append(WindowEnd(offset - W, offset))
    return out


def replay(detector: Detector, stream: Sequence[DetectorInput]) -> list[Decision]:
    return [d for x in stream if (d := detector.update(x)) is not None]


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_every_detector_of_the_package_is_checked_here() -> None:
    exported = {obj for name in drift.__all__ if inspect.isclass(obj := getattr(drift, name))
                and obj is not Detector and all(hasattr(obj, m) for m in ("update", "reset", "evidence_start"))}
    assert exported == {type(case.make()) for case in CASES.values()}


def test_satisfies_the_protocol(case: Case) -> None:
    detector = case.make()
    assert isinstance(detector, Detector)
    assert isinstance(detector.name, str) and detector.name
    assert detector.evidence_start is None  # nothing seen, nothing pending


def test_in_distribution_decides_nothing(case: Case) -> None:
    assert replay(case.make(), inputs([(IN_CONTROL, 30)])) == []


def test_a_sustained_shift_fires(case: Case) -> None:
    stream = inputs([(IN_CONTROL, 3), (case.shift, 10)])
    decisions = replay(case.make(), stream)
    firing = [d for d in decisions if d.status == "firing"]
    assert firing, "no firing decision on a sustained shift"
    last = stream[-1]
    assert isinstance(last, WindowEnd)
    for d in firing:
        assert d.detector == case.make().name
        assert d.statistic >= d.threshold * (1 - 1e-9)  # fired: the statistic reached its threshold
        assert 0 <= d.start_offset < d.end_offset <= last.end_offset and d.n >= 1
        assert d.resolves is None and d.streak >= 1


def test_a_clean_window_after_the_shift_resolves_or_never(case: Case) -> None:
    decisions = replay(case.make(), inputs([(case.shift, 5), (IN_CONTROL, 5)]))
    firing = [d for d in decisions if d.status == "firing"]
    resolved = [d for d in decisions if d.status == "resolved"]
    if not case.resolves:
        assert firing and resolved == []
        return
    assert len(resolved) == 1 and decisions[-1] is resolved[0]  # once, at the first clean window
    ended = resolved[0]
    assert ended.resolves == (firing[-1].start_offset, firing[-1].end_offset)
    assert ended.streak == firing[-1].streak and ended.start_offset >= firing[-1].end_offset


def test_reset_returns_to_the_initial_state(case: Case) -> None:
    stream = inputs([(IN_CONTROL, 2), (case.shift, 4), (IN_CONTROL, 2)], seed=5)
    fresh = replay(case.make(), stream)
    detector = case.make()
    replay(detector, stream[: len(stream) // 2 + 7])  # mid-window, mid-episode
    detector.reset()
    assert detector.evidence_start is None
    assert replay(detector, stream) == fresh


def test_decisions_are_deterministic_and_frozen(case: Case) -> None:
    stream = inputs([(IN_CONTROL, 2), (case.shift, 6)], seed=9)
    first, second = replay(case.make(), stream), replay(case.make(), stream)
    assert first and first == second
    with pytest.raises(dataclasses.FrozenInstanceError):
        first[0].statistic = 0.0  # type: ignore[misc]


def test_a_rewind_decides_nothing_and_forgets_the_open_evidence(case: Case) -> None:
    detector = case.make()
    stream = inputs([(case.shift, 1)], seed=3)
    replay(detector, [x for x in stream if not isinstance(x, WindowEnd)][: W // 2])
    assert detector.update(REWIND) is None
    assert detector.evidence_start is None
