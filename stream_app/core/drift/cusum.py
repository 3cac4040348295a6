"""Embedding drift, sequentially: a one-sided Bernoulli CUSUM on the outlier flag.

Why
---
The window test (``outlier_window``) judges W = 500 messages at a time with a 1e-6 false-alarm
budget per window: it needs the outlier count of ONE window to reach c = 20 (4x the expected 5).
A new kind of product at a small share raises the outlier rate by much less than that, and the
window test then waits for a lucky window. A CUSUM accumulates the evidence across windows and
alarms as soon as the accumulated log-likelihood ratio of "rate p1" against "rate p0" is large
enough, whatever the window boundaries. At high contamination the window test is as fast or
faster, so both run (``monitor``); the CUSUM stays quiet while the window test has already
reported the partition (see ``SequentialOutlierDetector``).

Statistic
---------
Each message is an outlier (distance > tau) with probability ``p0 = 1 - quantile`` in
distribution. Against the alternative ``p1 = shift * p0`` the log-likelihood ratio of one message
is ``a = ln(p1 / p0)`` for an outlier and ``-b = ln((1 - p1) / (1 - p0))`` for an inlier. The
statistic is kept in units of ``b`` with the outlier step rounded to an integer ``r = round(a / b)``
(Reynolds & Stoumbos' integer Bernoulli CUSUM; the rounding moves p1 by under 1%, reported as
``p1``)::

    S_0 = 0,   S_t = max(0, S_{t-1} + r)  for an outlier,   max(0, S_{t-1} - 1)  for an inlier

and the CUSUM alarms when ``S_t >= H`` (``h = H * b`` in log-likelihood units), then restarts at 0.
Being integer, the statistic is a finite Markov chain on ``0 .. H - 1``: ``average_run_length``
solves it EXACTLY (no Siegmund/Wald approximation) for any in-control rate p, and
``design_cusum`` takes the smallest ``H`` whose run length at the calibration rate reaches the
target. With restarts, alarms per message are ``1 / ARL`` (renewal), so a target ARL of 2,000,000
means 0.5 false alarms per million messages at that rate.

Calibration rate (``guard``): tau is the 0.99 quantile of a few thousand validation distances, so
the true in-distribution rate is only known to within ~+-30% (measured: 0.66% and 1.3% on held-out
rows of two bundles calibrated at 1%). A CUSUM tuned to detect 3 x p0 is much more sensitive to
that error than a 1e-6 window test, so the ARL is calibrated at ``guard * p0`` (default 1.3): the
false-alarm target holds as long as the true rate is within 1.3 x p0. ``export drift-eval``
measures the false alarms on resampled held-out rows (README).

Defaults (p0 = 0.01; ``design_cusum(0.01)``; exact chain): shift 3 (p1 = 0.03), r = 54, H = 747
(h = 15.2), ARL 2.0 million at 1.3 x p0, 55 million at p0, 1,000 messages at 2.5 x p0, 312 at 3 x,
155 at 4 x; an uninterrupted run of outliers alarms at the 14th.

Replays and ids
---------------
The statistic of a partition starts from 0 at a window start (the monitor feeds a detector only
from the first block start it sees, and resets it on a backward jump), so after a crash the
replacement worker starts it at the first block boundary after the committed offset. Because the
recursion is monotone in its starting value and forgets everything when it touches 0, the replayed
statistic equals the original from the first offset at which the original was 0. An alarm's
``alert_id`` hashes the partition and ``[run_start_offset, alarm_offset + 1)``, where the run start
is the first offset after the statistic's last zero: a replay that (re)starts at or before the run
start reproduces the alarm at the same offset with the same id. A replay that starts inside the run
(the worker died while evidence was accumulating) has less evidence: it alarms later with another
run start (another id), or not at all. The pager then sees one more alert of the same episode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import log, sqrt

import numpy as np
from scipy.sparse import csr_matrix, identity
from scipy.sparse.linalg import spsolve

from stream_app.core.drift.alerts import (
    AlertContext,
    MovedCentroid,
    SequentialDriftAlert,
    SequentialThresholds,
    alert_id,
)
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.window import OpenWindow, utc_now

DEFAULT_SHIFT = 3.0
DEFAULT_TARGET_ARL = 2_000_000.0
DEFAULT_GUARD = 1.3
SEQUENTIAL = "embedding_drift_sequential"
TOP_MOVED = 5


def _unit_steps(p0: float, p1: float) -> tuple[float, float]:
    """(a, b): log-likelihood ratio of an outlier, and minus that of an inlier."""
    return log(p1 / p0), log((1.0 - p0) / (1.0 - p1))


def average_run_length(p: float, step: int, threshold: int) -> float:
    """Exact expected messages to the first alarm of the integer CUSUM from 0, messages iid Bernoulli(p).

    States ``0 .. threshold - 1``; an outlier moves ``s -> s + step`` (alarm at ``>= threshold``),
    an inlier ``s -> max(0, s - 1)``. Solves ``(I - Q) L = 1`` (sparse, exact up to float rounding).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if step < 1 or threshold < 1:
        raise ValueError(f"step and threshold must be >= 1, got {step}, {threshold}")
    states = np.arange(threshold)
    up = states + step
    rows = [states[up < threshold], states]
    cols = [up[up < threshold], np.maximum(states - 1, 0)]
    vals = [np.full(int((up < threshold).sum()), p), np.full(threshold, 1.0 - p)]
    q = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(threshold, threshold))
    arl = spsolve((identity(threshold, format="csr") - q).tocsc(), np.ones(threshold))
    return float(np.atleast_1d(arl)[0])


@dataclass(frozen=True)
class CusumDesign:
    """Parameters of the integer Bernoulli CUSUM (see the module docstring)."""

    p0: float  # calibrated in-distribution outlier rate
    shift: float  # requested p1 / p0
    step: int  # r: statistic units added by an outlier (an inlier removes 1)
    threshold: int  # H: alarm when the statistic reaches it
    unit: float  # b: log-likelihood ratio of one statistic unit
    guard: float  # the ARL was calibrated at guard * p0
    target_arl: float
    arl_at_guard: float  # exact in-control ARL at guard * p0 (>= target_arl)
    arl_at_p0: float  # exact in-control ARL at p0

    @property
    def p1(self) -> float:
        """The alternative rate the rounded step is optimal for: solves ln(p1/p0) = step * ln((1-p0)/(1-p1))."""
        lo, hi = self.p0 * 1.0000001, 0.999999
        for _ in range(200):  # bisection: the difference is increasing in p1
            mid = (lo + hi) / 2
            a, b = _unit_steps(self.p0, mid)
            lo, hi = (mid, hi) if a - self.step * b > 0 else (lo, mid)
        return (lo + hi) / 2

    @property
    def h(self) -> float:
        """The threshold in log-likelihood-ratio units."""
        return self.threshold * self.unit

    def arl(self, p: float) -> float:
        """Exact expected messages to an alarm from 0 when the outlier rate is ``p``."""
        return average_run_length(p, self.step, self.threshold)

    def describe(self) -> dict[str, float | int]:
        return {"p0": self.p0, "shift": self.shift, "p1": self.p1, "step": self.step, "threshold": self.threshold,
                "h": self.h, "guard": self.guard, "target_arl": self.target_arl, "arl_at_guard": self.arl_at_guard,
                "arl_at_p0": self.arl_at_p0}


def design_cusum(p0: float, shift: float = DEFAULT_SHIFT, target_arl: float = DEFAULT_TARGET_ARL,
                 guard: float = DEFAULT_GUARD) -> CusumDesign:
    """Smallest integer threshold whose exact in-control ARL at ``guard * p0`` is at least ``target_arl``."""
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 must be in (0, 1), got {p0}")
    if not (shift > 1.0 and shift * p0 < 1.0):
        raise ValueError(f"shift must be > 1 with shift * p0 < 1, got {shift} (p0 = {p0})")
    if not 1.0 <= guard < shift:
        raise ValueError(f"guard must be in [1, shift), got {guard}")
    if target_arl <= 1:
        raise ValueError(f"target_arl must be > 1, got {target_arl}")
    a, b = _unit_steps(p0, shift * p0)
    step = max(1, round(a / b))
    rate = min(guard * p0, 0.999)
    lo, hi = 1, step
    while average_run_length(rate, step, hi) < target_arl:  # grows exponentially in the threshold
        lo, hi = hi, hi * 2
        if hi > 10_000_000:
            raise ValueError(f"no threshold reaches ARL {target_arl} (p0 {p0}, shift {shift}, guard {guard})")
    while lo < hi:
        mid = (lo + hi) // 2
        if average_run_length(rate, step, mid) >= target_arl:
            hi = mid
        else:
            lo = mid + 1
    return CusumDesign(p0=p0, shift=shift, step=step, threshold=hi, unit=b, guard=guard, target_arl=target_arl,
                       arl_at_guard=average_run_length(rate, step, hi), arl_at_p0=average_run_length(p0, step, hi))


@dataclass(frozen=True, slots=True)
class CusumAlarm:
    """The statistic crossed its threshold: ``statistic`` units after ``run_length`` messages of the run
    (``run_outliers`` of them outliers); the run started at the first of them."""

    statistic: int
    run_length: int
    run_outliers: int


class BernoulliCusum:
    """The integer one-sided Bernoulli CUSUM of ``design``: ``update(outlier) -> CusumAlarm | None``.

    After an alarm the statistic restarts at 0. ``run_length``/``run_outliers``: messages (outliers)
    since the statistic last left 0 (both 0 while it sits at 0). ``reset()`` forgets everything.
    """

    __slots__ = ("design", "statistic", "run_length", "run_outliers")

    def __init__(self, design: CusumDesign) -> None:
        self.design = design
        self.reset()

    def reset(self) -> None:
        self.statistic = 0
        self.run_length = 0
        self.run_outliers = 0

    def update(self, outlier: bool) -> CusumAlarm | None:
        if outlier:
            self.statistic += self.design.step
            self.run_length += 1
            self.run_outliers += 1
        elif self.statistic > 0:
            self.statistic -= 1
            self.run_length += 1
        if self.statistic == 0:  # the run ended (or never started): the evidence is gone
            self.run_length = self.run_outliers = 0
            return None
        if self.statistic < self.design.threshold:
            return None
        alarm = CusumAlarm(self.statistic, self.run_length, self.run_outliers)
        self.reset()
        return alarm


def _outlier_positions(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([R, M] positions of each row's outliers, padded with -1; [R] outliers per row)."""
    rows, cols = np.nonzero(flags)
    counts = np.bincount(rows, minlength=flags.shape[0])
    positions = np.full((flags.shape[0], int(counts.max()) if len(rows) else 0), -1, dtype=np.int64)
    positions[rows, np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]] = cols
    return positions, counts


def _cusum_alarms(flags: np.ndarray, step: int, threshold: int, start: np.ndarray | None, first_only: bool):
    """Vectorized ``BernoulliCusum`` over the rows of ``flags`` ([R, L] bool), restarting after each alarm.

    The statistic only rises at an outlier and falls by one per inlier (floored at 0), so it is
    enough to visit the outliers: before outlier j it is ``max(0, S - inliers since outlier j-1)``.
    Returns (first alarm at or after ``start`` per row or -1, total alarms).
    """
    flags = np.asarray(flags, dtype=bool)
    positions, counts = _outlier_positions(flags)
    rows = flags.shape[0]
    start = np.zeros(rows, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64)
    s = np.zeros(rows, dtype=np.int64)
    previous = np.full(rows, -1, dtype=np.int64)
    first = np.full(rows, -1, dtype=np.int64)
    alarms = 0
    for j in range(positions.shape[1]):
        valid = j < counts
        at = positions[:, j]
        s = np.where(valid, np.maximum(s - (at - previous - 1), 0) + step, s)
        previous = np.where(valid, at, previous)
        alarm = valid & (s >= threshold)
        if alarm.any():
            alarms += int(alarm.sum())
            s[alarm] = 0
            first[alarm & (first < 0) & (at >= start)] = at[alarm & (first < 0) & (at >= start)]
            if first_only and (first >= 0).all():
                break
    return first, alarms


def cusum_paths_first_alarm(flags: np.ndarray, step: int, threshold: int, start: np.ndarray | None = None) -> np.ndarray:
    """Vectorized ``BernoulliCusum``: index of the first alarm at or after ``start[i]`` of each row of
    ``flags`` ([R, L] bool), or -1. The statistic runs from index 0 (restarting after each alarm), so
    an alarm before ``start`` (a false alarm before the onset) restarts it like in the worker."""
    return _cusum_alarms(flags, step, threshold, start, first_only=True)[0]


def cusum_alarm_count(flags: np.ndarray, step: int, threshold: int) -> int:
    """Alarms of the restarting CUSUM over every row of ``flags`` ([R, L] bool), rows run in parallel."""
    return _cusum_alarms(flags, step, threshold, None, first_only=False)[1]


class SequentialOutlierDetector:
    """The CUSUM of ONE partition behind the monitor's detector interface.

    ``update(obs, window)`` -> ``SequentialDriftAlert`` or None; ``close(window)`` -> None (the
    statistic carries over from window to window); ``reset()`` restarts the statistic at 0 (the
    monitor calls it when a partition jumps back). At most one alert per aligned window (a second
    crossing in the same window restarts the statistic silently). While ``quiet()`` is true the
    statistic is held at 0: the monitor passes "the window test has decided the current window, or
    an embedding_drift alert of this partition is firing", so the sequential test only speaks when
    it is ahead of the window test, and starts afresh when the window test's episode is resolved.
    Alerts are ``firing`` records; they are not resolved (the window test's ``resolved`` record
    ends an embedding_drift episode; a pager expires the sequential ones).
    """

    def __init__(
        self,
        design: CusumDesign,
        context: AlertContext = AlertContext(),
        tau: float | None = None,
        reference_centroid_share: Sequence[float] = (),
        sample_size: int = 10,
        quiet: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if sample_size < 0:
            raise ValueError(f"sample_size must be >= 0, got {sample_size}")
        self.design = design
        self.cusum = BernoulliCusum(design)
        self.context = context
        self.reference_centroid_share = [float(s) for s in reference_centroid_share]
        self.sample_size = sample_size
        self.thresholds = SequentialThresholds(
            tau=None if tau is None else float(tau),
            expected_rate=design.p0,
            alternative_rate=design.p1,
            threshold=design.h,
            calibrated_rate=min(design.guard * design.p0, 0.999),
            in_control_arl=design.arl_at_guard,
        )
        self._quiet = quiet
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Restart the statistic at 0 and forget the run."""
        self.cusum.reset()
        self._alerted_window: int | None = None  # start offset of the window of the last alert
        self._run_start: int | None = None
        self._centroids: Counter[int] = Counter()
        self._sample: list[str] = []

    def update(self, obs: Observation, window: OpenWindow) -> SequentialDriftAlert | None:
        """One observation; an alert when the statistic crosses its threshold and nothing reported it yet."""
        cusum = self.cusum
        if self._quiet():  # the window test reports this partition: hold the statistic at 0
            cusum.reset()
            self._run_start = None
            return None
        if cusum.statistic == 0:
            if not obs.outlier:
                return None  # at 0 an inlier changes nothing
            self._run_start = obs.offset  # an outlier at 0 starts a run
            self._centroids = Counter()
            self._sample = []
        self._centroids[obs.nearest_centroid] += 1
        if obs.outlier and len(self._sample) < self.sample_size:
            self._sample.append(obs.product_id)
        alarm = cusum.update(obs.outlier)
        if alarm is None or self._run_start is None:
            return None
        run_start, centroids, sample = self._run_start, self._centroids, self._sample
        self._run_start = None
        if self._alerted_window == window.start_offset:
            return None  # at most one alert per window: restart silently
        self._alerted_window = window.start_offset
        c = self.context
        identity = alert_id("firing", SEQUENTIAL, c.model_version, c.group_id, c.topic, window.partition,
                            run_start, obs.offset + 1)
        return SequentialDriftAlert(
            alert_id=identity,
            model_version=c.model_version,
            group_id=c.group_id,
            topic=c.topic,
            partition=window.partition,
            window=window.snapshot(),
            worker_id=c.worker_id,
            run_start_offset=run_start,
            alarm_offset=obs.offset,
            n=alarm.run_length,
            outliers=alarm.run_outliers,
            expected=alarm.run_length * self.design.p0,
            statistic=alarm.statistic * self.design.unit,
            thresholds=self.thresholds,
            top_moved_centroids=self._moved_centroids(centroids, alarm.run_length),
            outlier_sample=sample,
            recommendation="investigate",
            created_at=self._clock(),
        )

    def close(self, window: OpenWindow) -> None:
        """End of an aligned window: nothing to decide (the statistic carries over)."""
        return None

    def _moved_centroids(self, counts: Counter[int], n: int) -> list[MovedCentroid]:
        """Centroids of the run with the largest positive Pearson residual against the reference shares."""
        ref = self.reference_centroid_share
        scored = []
        for centroid, count in counts.items():
            share = ref[centroid] if 0 <= centroid < len(ref) else 0.0
            expected = n * share
            residual = (count - expected) / sqrt(max(expected, 0.5))
            if residual > 0:
                scored.append((residual, centroid, count, expected, share))
        scored.sort(reverse=True)
        return [MovedCentroid(centroid=centroid, count=count, expected_count=expected, share=count / n,
                              reference_share=min(1.0, share))
                for _, centroid, count, expected, share in scored[:TOP_MOVED]]
