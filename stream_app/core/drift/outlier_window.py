"""Embedding drift: the outlier rate of a window tested against its calibrated rate.

Test
----
Calibration sets ``tau`` at the ``quantile`` q of held-out in-distribution distances, so an
in-distribution message is an outlier with probability ``p0 = 1 - q``. A window is ``W`` consecutive
offsets of one input partition (aligned: ``[k*W, (k+1)*W)``, see ``monitor``); over its ``n <= W``
observations (dead letters occupy offsets but bring none) the outlier count is Binomial(n, p0); the
window drifts when the count reaches the critical count ``c = critical_count(W, p0, alpha)``, i.e.
with false-alarm probability <= alpha per window when the stream is in control (for ``n < W`` the
same ``c`` is conservative).

Because the count only grows within a window, the verdict is settled the moment the ``c``-th outlier
arrives: the firing decision comes then (``n`` = observations so far), not at the end of the window.
That changes latency, not the false-alarm rate. The rest of the window is still consumed (and
counted as drifting) but cannot fire again: at most one firing decision per window. A window that
ends without firing is clean if it had at least ``MIN_CLEAN_SHARE`` of W observations (else
inconclusive); the first clean window after a firing one yields a ``resolved`` decision naming it.

Default alpha = 1e-6 (``DEFAULT_ALPHA``), for W = 500 and p0 = 0.01 (exact binomial figures):

* c = 20 outliers (expected 5); P(false alarm per window) = 2.8e-7, i.e. 5.6e-5 alarms per 100,000
  in-control messages.
* Margin for a mis-calibrated p0 (q estimated on a finite validation split, correlated arrivals):
  if the true in-distribution rate is 1.5 x p0 the detector still raises only 0.019 alarms per
  100,000 messages, and at 2 x p0 0.63: under the target of < 1 per 100,000 in both cases.
  alpha = 1e-5 (c = 18) would give 2.7 at 2 x p0, and 1e-4 (c = 16) 9.4: too fragile.
* Power per window: 0.003 at 2 x p0 (a doubling is deliberately not enough: it is within the
  calibration error above), 0.12 at 3 x, 0.87 at 5 x (0.98 within two windows), 1.0 at 10 x
  (detected in the first window, typically after ~200 messages).
* alpha = 1e-7 (c = 21) buys little more safety and loses power at 5 x (0.82).

``export.false_alarms.simulate_false_alarm_rate`` (build time) checks the figure empirically on
held-out flags, with a block bootstrap that keeps their serial correlation.
"""

from __future__ import annotations

from stream_app.core.drift.binomial import critical_count, tail_probability
from stream_app.core.drift.detector import Decision
from stream_app.core.drift.observation import Observation, WindowEnd
from stream_app.core.drift.windowed import WindowedTest

DEFAULT_WINDOW = 500
DEFAULT_ALPHA = 1e-6
EMBEDDING_DRIFT = "embedding_drift"


class OutlierRateDetector(WindowedTest):
    """Binomial test of the outlier rate over the aligned windows of ONE partition (a ``Detector``).

    ``update(observation)``: a firing decision at the ``critical``-th outlier of a window (at most one
    per window, ``statistic`` = outliers, ``threshold`` = ``critical``, evidence = the window); at a
    ``WindowEnd``, a resolved decision when a clean window ends an episode; otherwise None. Its
    windows must be the driver's: ``window_size`` = the driver's W.
    """

    name = EMBEDDING_DRIFT

    def __init__(self, window_size: int = DEFAULT_WINDOW, expected_rate: float = 0.01,
                 alpha: float = DEFAULT_ALPHA) -> None:
        super().__init__(window_size)
        self.p0 = float(expected_rate)
        self.alpha = float(alpha)
        self.critical = critical_count(self.window_size, self.p0, self.alpha)  # validates the three
        if self.critical > self.window_size:
            raise ValueError(
                f"alpha={alpha} is unreachable with window_size={window_size}, p0={expected_rate}: "
                "even a window of only outliers would not alert; enlarge the window"
            )
        self.outliers = 0  # of the open window
        self.observed = 0
        self._fired = False  # the open window has fired

    @property
    def reporting(self) -> bool:
        """True while this test reports the partition: an episode is firing or the current window fired."""
        return self.firing is not None or self.outliers >= self.critical

    def _observe(self, observation: Observation, window_start: int) -> Decision | None:
        self.observed += 1
        self.outliers += int(observation.outlier)
        if self._fired or self.outliers < self.critical:
            return None
        self._fired = True
        return self._decision((window_start, window_start + self.window_size), *self._test())

    def _judge(self, window: WindowEnd) -> Decision | None:
        """A clean window ends the firing episode, if any (a drifting one was decided already)."""
        if self._fired or (ended := self._ended_episode(window, self.observed)) is None:
            return None
        return self._decision((window.start_offset, window.end_offset), *self._test(), ended=ended)

    def _test(self) -> tuple[float, float, int, float]:
        """(statistic, threshold, n, p-value) of the open window."""
        return (float(self.outliers), float(self.critical), self.observed,
                tail_probability(self.outliers, self.observed, self.p0))

    def _forget_window(self) -> None:
        self.outliers = 0
        self.observed = 0
        self._fired = False
