"""Embedding drift, sequentially: one-sided Bernoulli CUSUMs of distance flags, across windows.

Why
---
The window test (``outlier_window``) judges W = 500 messages at a time with a 1e-6 false-alarm
budget per window: it needs the outlier count of ONE window to reach c = 20 (4x the expected 5).
A new kind of product at a small share raises the outlier rate by much less than that, and the
window test then waits for a lucky window. A CUSUM accumulates the evidence across windows and
alarms as soon as the accumulated log-likelihood ratio of "rate p1" against "rate p0" is large
enough, whatever the window boundaries. Both run (``monitor``); the CUSUM stays quiet while the
window test has already reported the partition (see ``SequentialOutlierDetector``).

Two channels (``CusumChannel``, ``default_channels``), each a CUSUM of its own flag:

* tau: the outlier flag (distance > tau, the calibration's 0.99 quantile, p0 = 0.01), tuned to
  3 x p0. Products far from everything the model knows (another language, another trade) are
  nearly all beyond tau: this channel sees them at a share of a few percent.
* near: distance > the calibration's 0.9 reference quantile (p0 = 0.1), tuned to 1.5 x p0. A new
  kind of product in the same language is mostly NOT beyond tau (measured: 3.5% of a left-out
  Elo7 category against 1.1% of held-out rows) but is farther out than usual as a whole (34% beyond
  the 0.9 quantile against 10%): ``export drift-eval`` measured this channel at 770 messages
  (median) for such a category at a 25% share, the tau channel at 18,000 (README).

Statistic
---------
In distribution a message is flagged with probability ``p0 = 1 - quantile``. Against the
alternative ``p1 = shift * p0`` the log-likelihood ratio of one message is ``a = ln(p1 / p0)`` if
flagged and ``-b = ln((1 - p1) / (1 - p0))`` if not. The statistic is kept in units of ``b`` with
the flagged step rounded to an integer ``r = round(a / b)`` (Reynolds & Stoumbos' integer Bernoulli
CUSUM; the rounding moves p1 by under 2%, reported as ``p1``)::

    S_0 = 0,   S_t = max(0, S_{t-1} + r)  if flagged,   max(0, S_{t-1} - 1)  if not

and the CUSUM alarms when ``S_t >= H`` (``h = H * b`` in log-likelihood units), then restarts at 0.
Being integer, the statistic is a finite Markov chain on ``0 .. H - 1``: ``average_run_length``
solves it EXACTLY (no Siegmund/Wald approximation) for any flagged rate p, and ``design_cusum``
takes the smallest ``H`` whose run length at the calibration rate reaches the target (2,000,000
messages per channel). With restarts, alarms per message are ``1 / ARL`` (renewal): at most 0.5
false alarms per million messages per channel at the calibration rate, far fewer at p0.

Calibration rate (``guard``): the cut is a quantile of a few thousand validation distances, so the
true in-distribution rate is known only to about +-2 standard errors: +-30% at the 0.99 quantile
(held-out rows measured 0.66%, 1.09% and 1.3% beyond tau on three bundles calibrated at 1%), +-10%
at the 0.9 quantile. A CUSUM tuned to a 1.5x or 3x rise is far more sensitive to that error than a
1e-6 window test, so the ARL is calibrated at ``guard * p0``: 1.3 x p0 for tau, 1.1 x p0 for the
near channel; the false-alarm target holds while the true rate stays within that. It assumes a
validation split of ~3,000 rows (the Elo7 catalog's); a bundle calibrated on far fewer rows needs a
larger guard. ``export drift-eval`` measures the false alarms on resampled held-out rows.

Defaults (exact chain):

* tau, p0 = 0.01: shift 3 (p1 = 0.0298), r = 54, H = 731 (h = 14.9). Mean messages to an alarm:
  2.0 million at 1.3 x p0, 4.2e8 at p0; 4,898 at 2 x p0, 1,787 at 2.5 x, 1,080 at 3 x, 602 at 4 x,
  166 at 10 x; an uninterrupted run of outliers alarms at the 14th.
* near, p0 = 0.1: shift 1.5 (p1 = 0.153), r = 7, H = 252 (h = 14.4): 2.0 million at 1.1 x p0, 4.5e8
  at p0; 32,488 at 1.2 x, 9,253 at 1.25 x, 1,181 at 1.5 x, 413 at 2 x.

Replays and ids
---------------
The statistics of a partition start from 0 at a window start (the monitor feeds a detector only
from the first block start it sees, and rewinds it on a backward jump), so after a crash the
replacement worker starts them at the first block boundary after the committed offset. Because the
recursion is monotone in its starting value and forgets everything when it touches 0, the replayed
statistic equals the original from the first offset at which the original was 0. An alarm's
decision names its run as the evidence, and the record's ``alert_id`` (``records``) hashes the
partition and ``[run_start_offset, alarm_offset + 1)``, where the run start is the first offset
after the statistic's last zero: a replay that (re)starts at or before the run
start reproduces the alarm at the same offset with the same id. What does NOT hold: a replay that
starts inside the run (the worker died while evidence was accumulating) has less evidence and
alarms later with another run start (another id), or not at all; and the quiet rule depends on the
window test's memory of a firing alert, which a new process does not have, so it may send a
sequential alert that the first process held back. The pager then sees one more alert of the
same episode, with its own id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import log
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import csr_matrix, identity
from scipy.sparse.linalg import spsolve

from stream_app.core.drift.detector import Decision, DetectorInput
from stream_app.core.drift.observation import Rewind, WindowEnd

if TYPE_CHECKING:
    from stream_app.core.bundle import DriftCalibration

DEFAULT_SHIFT = 3.0
DEFAULT_TARGET_ARL = 2_000_000.0
DEFAULT_GUARD = 1.3
# The near channel: the 0.9 reference quantile of distances (p0 = 0.1), tuned to a 1.5x rise.
NEAR_QUANTILE = 0.9
NEAR_SHIFT = 1.5
NEAR_GUARD = 1.1
SEQUENTIAL = "embedding_drift_sequential"


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

    __slots__ = ("design", "run_length", "run_outliers", "statistic")

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


def _cusum_alarms(flags: np.ndarray, step: int, threshold: int, start: np.ndarray | None,
                  first_only: bool) -> tuple[np.ndarray, int]:
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


def cusum_paths_first_alarm(flags: np.ndarray, step: int, threshold: int,
                            start: np.ndarray | None = None) -> np.ndarray:
    """Vectorized ``BernoulliCusum``: index of the first alarm at or after ``start[i]`` of each row of
    ``flags`` ([R, L] bool), or -1. The statistic runs from index 0 (restarting after each alarm), so
    an alarm before ``start`` (a false alarm before the onset) restarts it like in the worker."""
    return _cusum_alarms(flags, step, threshold, start, first_only=True)[0]


def cusum_alarm_count(flags: np.ndarray, step: int, threshold: int) -> int:
    """Alarms of the restarting CUSUM over every row of ``flags`` ([R, L] bool), rows run in parallel."""
    return _cusum_alarms(flags, step, threshold, None, first_only=False)[1]


@dataclass(frozen=True)
class CusumChannel:
    """One CUSUM of the sequential detector: on the indicator ``distance > cut`` where ``cut`` is the
    calibration's ``quantile`` of in-distribution distances (so ``design.p0 = 1 - quantile``).
    ``cut=None`` means the observation's own ``outlier`` flag (distance > tau: the tau channel)."""

    design: CusumDesign
    quantile: float
    cut: float | None = None

    def __post_init__(self) -> None:
        if abs(self.design.p0 - (1.0 - self.quantile)) > 1e-9:
            raise ValueError(f"channel at quantile {self.quantile} needs p0 = {1 - self.quantile:g}, "
                             f"its design has p0 = {self.design.p0:g}")


def default_channels(calibration: DriftCalibration) -> list[CusumChannel]:
    """The worker's channels for a bundle's calibration: the tau channel (``design_cusum(1 - quantile)``)
    and, when the calibration has the reference quantile ``NEAR_QUANTILE`` below its own, the near
    channel at that distance (``NEAR_SHIFT``, ``NEAR_GUARD``)."""
    quantile = float(calibration.quantile)
    channels = [CusumChannel(design_cusum(1.0 - quantile), quantile)]
    # Hand-made calibrations (tests, drift-eval) may come without reference quantiles: no near channel.
    references: dict[str, float] = getattr(calibration, "distance_quantiles", None) or {}
    near = references.get(f"{NEAR_QUANTILE:g}")
    if near is not None and quantile > NEAR_QUANTILE:
        channels.append(CusumChannel(design_cusum(1.0 - NEAR_QUANTILE, shift=NEAR_SHIFT, guard=NEAR_GUARD),
                                     NEAR_QUANTILE, float(near)))
    return channels


class _Run:
    """One channel's statistic and where its current run started."""

    __slots__ = ("channel", "cusum", "start")

    def __init__(self, channel: CusumChannel) -> None:
        self.channel = channel
        self.cusum = BernoulliCusum(channel.design)
        self.clear()

    def clear(self) -> None:
        self.cusum.reset()
        self.start: int | None = None

    @property
    def evidence_start(self) -> int | None:
        """Start of the run while the statistic is above 0 (a run that fell back to 0 is gone)."""
        return self.start if self.cusum.statistic > 0 else None


class SequentialOutlierDetector:
    """The CUSUM channels of ONE partition (a ``Detector``).

    ``update(observation)`` -> a firing decision or None: ``statistic`` = the log-likelihood ratio
    accumulated over the run (``threshold`` = h), evidence = the run ``[run start, alarm offset + 1)``,
    ``channel`` = the index of the channel that crossed. Each channel (``CusumChannel``) runs its own
    statistic, carried over from window to window; at most one decision per aligned window
    (``WindowEnd`` marks their ends), whichever channel crosses first (a later crossing in the same
    window restarts that statistic silently). A ``Rewind`` restarts every statistic at 0. While
    ``quiet()`` is true the statistics are held at 0: the monitor passes "the window test reports this
    partition" (``OutlierRateDetector.reporting``), so the sequential test only speaks when it is ahead
    of the window test, and starts afresh when the window test's episode is resolved. It never
    resolves (the window test's resolution ends an embedding_drift episode; a pager expires the
    sequential alerts).
    """

    name = SEQUENTIAL

    def __init__(self, channels: CusumChannel | Sequence[CusumChannel],
                 quiet: Callable[[], bool] = lambda: False) -> None:
        self.channels = [channels] if isinstance(channels, CusumChannel) else list(channels)
        if not self.channels:
            raise ValueError("a sequential detector needs at least one channel")
        self._runs = [_Run(c) for c in self.channels]
        self._quiet = quiet
        self.reset()

    @property
    def evidence_start(self) -> int | None:
        starts = [start for run in self._runs if (start := run.evidence_start) is not None]
        return min(starts) if starts else None

    def reset(self) -> None:
        """Restart every statistic at 0 and forget the runs."""
        for run in self._runs:
            run.clear()
        self._fired_in_window = False

    def update(self, observation: DetectorInput) -> Decision | None:
        """One input; a firing decision when a statistic crosses its threshold first in the window."""
        if isinstance(observation, WindowEnd):
            self._fired_in_window = False
            return None
        if isinstance(observation, Rewind):
            self.reset()
            return None
        if self._quiet():  # the window test reports this partition: hold the statistics at 0
            for run in self._runs:
                if run.cusum.statistic:
                    run.clear()
            return None
        decision = None
        for i, run in enumerate(self._runs):
            cut = run.channel.cut
            flagged = observation.outlier if cut is None else observation.distance > cut
            if run.cusum.statistic == 0:
                if not flagged:
                    continue  # at 0 an inlier changes nothing
                run.start = observation.offset  # a flagged message at 0 starts a run
            alarm = run.cusum.update(flagged)
            if alarm is None or run.start is None:
                continue
            start, run.start = run.start, None
            if decision is not None or self._fired_in_window:
                continue  # at most one decision per window: restart silently
            design = run.channel.design
            decision = Decision(self.name, "firing", alarm.statistic * design.unit, design.h, start,
                                observation.offset + 1, alarm.run_length, channel=i)
        if decision is not None:
            self._fired_in_window = True
        return decision
