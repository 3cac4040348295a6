"""Category-mix drift: chi-square goodness of fit of a window's top categories against the reference.

At the end of each window (``W`` consecutive offsets of one input partition, aligned to offsets:
see ``monitor``), the counts of the predicted top categories of its ``n <= W`` observations (dead
letters bring none) are compared with ``n * reference_share`` (Pearson chi-square,
``scipy.stats.chisquare``); the window drifts when ``p <= alpha``. A window that does not drift is
clean if it had at least ``MIN_CLEAN_SHARE`` of W observations (else inconclusive); the first clean
window after an alert yields a ``DriftResolved`` naming it.

Small reference shares: categories are MERGED, not floored. The chi-square approximation needs
expected counts of about 5 or more (Cochran's rule); flooring a zero share with an epsilon would
leave an expected count near 0, and a single message of that category would give an enormous
statistic and a false alarm. So categories with ``W * share < min_expected`` are pooled into one
bin; if that pool is still below ``min_expected`` it is merged with the next smallest category,
until every bin qualifies. The plan is fixed at construction for full windows (it depends only on W
and the shares); a window with fewer observations (dead letters) gets its own plan for its n.
The alert still lists every category with its own count and expected count.

Default alpha = 1e-6, for W = 500 and the Elo7 reference mix (6 categories, df = 5): the critical
chi-square is 35.9. Against the 2019 Elo7 shift (Bebê 18 % -> 10 %, Papel e Cia 7 % -> 12 %) the
power is 0.66 per window of 500 (0.88 within two windows) and 0.998 per window of 1,000. The far tail
of the chi-square approximation is only approximate; check false alarms empirically with
``false_alarms.simulate_false_alarm_rate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from math import isfinite, sqrt

import numpy as np
from scipy.stats import chi2, chisquare

from stream_app.core.drift.alerts import (
    AlertContext,
    CategoryCount,
    CategoryMixAlert,
    CategoryThresholds,
    DriftResolved,
    Status,
    alert_id,
)
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.window import DriftStreak, OpenWindow, min_clean_observations, utc_now

DEFAULT_CATEGORY_ALPHA = 1e-6
MIN_EXPECTED = 5.0


def merge_plan(expected: Sequence[float], min_expected: float = MIN_EXPECTED) -> list[list[int]]:
    """Group category indices into bins whose expected counts are all >= ``min_expected``.

    Categories below the threshold are pooled; a pool still too small absorbs the next smallest
    category. Returns a list of bins (lists of indices); a single bin means the test is impossible.
    """
    order = sorted(range(len(expected)), key=lambda i: expected[i])
    small = [i for i in order if expected[i] < min_expected]
    large = [i for i in order if expected[i] >= min_expected]  # ascending
    bins = [[i] for i in large]
    if small:
        pool = list(small)
        while sum(expected[i] for i in pool) < min_expected and bins:
            pool.extend(bins.pop(0))  # the smallest qualifying category
        bins.append(pool)
    return bins


class CategoryMixDetector:
    """Chi-square test of the top-category mix over the windows of ONE partition.

    ``update(obs, window)`` counts (never alerts mid-window); ``close(window)`` at the window's end
    -> ``CategoryMixAlert`` (``p <= alpha``), ``DriftResolved`` (first clean window after an alert)
    or None; ``reset()`` drops a window that is abandoned. ``reference_share[i]`` is the calibration
    share of label ``labels[i]`` (normalized here if it does not sum to exactly 1). Recommendation
    ``investigate``, then ``retrain`` after ``retrain_after`` consecutive drifting windows.
    """

    def __init__(
        self,
        window_size: int,
        reference_share: Sequence[float],
        labels: Sequence[str],
        alpha: float = DEFAULT_CATEGORY_ALPHA,
        retrain_after: int = 3,
        context: AlertContext = AlertContext(),
        min_expected: float = MIN_EXPECTED,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"category alpha must be in (0, 1), got {alpha}")
        if len(reference_share) != len(labels):
            raise ValueError(
                f"category_share has {len(reference_share)} entries but there are {len(labels)} labels"
            )
        shares = np.asarray(reference_share, dtype=float)
        bad = [i for i, s in enumerate(shares) if not isfinite(s) or s < 0]
        if bad:
            raise ValueError(f"category_share[{bad[0]}] ({labels[bad[0]]!r}) = {shares[bad[0]]}: must be finite, >= 0")
        if shares.sum() <= 0:
            raise ValueError("category_share sums to 0")
        self.window_size = int(window_size)
        self.reference_share = shares / shares.sum()
        self.labels = list(labels)
        self.alpha = float(alpha)
        self.min_expected = float(min_expected)
        self.context = context
        self.bins = merge_plan(list(self.window_size * self.reference_share), self.min_expected)
        self._clock = clock
        self._streak = DriftStreak(retrain_after)
        self._min_clean = min_clean_observations(self.window_size)
        self.reset()

    @property
    def testable(self) -> bool:
        """False when merging left fewer than two bins (window too small for these shares)."""
        return len(self.bins) >= 2

    @property
    def consecutive_windows(self) -> int:
        return self._streak.consecutive

    @property
    def firing(self) -> str | None:
        """alert_id of the last alert not resolved yet."""
        return self._streak.firing

    def reset(self) -> None:
        """Forget the current window's counts (window closed or abandoned)."""
        self.counts = np.zeros(len(self.labels), dtype=np.int64)

    def update(self, obs: Observation, window: OpenWindow) -> None:
        """Count one observation of the window; the verdict comes at ``close``."""
        if not 0 <= obs.top_index < len(self.labels):
            raise ValueError(
                f"top_index {obs.top_index} of product {obs.product_id!r} is outside the {len(self.labels)} labels"
            )
        self.counts[obs.top_index] += 1
        return None

    def close(self, window: OpenWindow) -> CategoryMixAlert | DriftResolved | None:
        """End of ``window``: an alert if the mix drifted, a resolution if it is the first clean one."""
        try:
            n = int(self.counts.sum())
            bins = self.bins if n == self.window_size else merge_plan(list(n * self.reference_share), self.min_expected)
            if n == 0 or len(bins) < 2:
                return None  # nothing to test: inconclusive
            statistic, p_value = self.test(self.counts, bins)
            thresholds = self._thresholds(len(bins) - 1)
            if p_value <= self.alpha:
                identity = self._id("firing", window)
                consecutive = self._streak.drifted(window.start_offset, identity)
                return self._alert(window, identity, consecutive, n, statistic, p_value, thresholds)
            if n < self._min_clean:
                return None
            ended = self._streak.clean(window.start_offset)
            if ended is None:
                return None
            return self.context.resolved("category_mix", self._id("resolved", window), window.partition, window.snapshot(),
                                         ended, n, statistic, p_value, thresholds, self._clock())
        finally:
            self.reset()

    def test(self, counts: np.ndarray, bins: list[list[int]] | None = None) -> tuple[float, float]:
        """Chi-square statistic and p-value of per-label ``counts`` over the merged ``bins``."""
        bins = self.bins if bins is None else bins
        n = float(counts.sum())
        observed = np.array([counts[b].sum() for b in bins], dtype=float)
        expected = np.array([self.reference_share[b].sum() * n for b in bins], dtype=float)
        result = chisquare(observed, expected)
        return float(result.statistic), float(result.pvalue)

    def _thresholds(self, df: int) -> CategoryThresholds:
        return CategoryThresholds(
            alpha=self.alpha,
            window_size=self.window_size,
            degrees_of_freedom=df,
            critical_chi_square=float(chi2.isf(self.alpha, df)),
            min_expected=self.min_expected,
        )

    def _id(self, status: Status, window: OpenWindow) -> str:
        c = self.context
        return alert_id(status, "category_mix", c.model_version, c.group_id, c.topic,
                        window.partition, window.start_offset, window.end_offset)

    def _alert(
        self,
        window: OpenWindow,
        identity: str,
        consecutive: int,
        n: int,
        statistic: float,
        p_value: float,
        thresholds: CategoryThresholds,
    ) -> CategoryMixAlert:
        rows = []
        for i, name in enumerate(self.labels):
            expected = n * float(self.reference_share[i])
            count = int(self.counts[i])
            residual = (count - expected) / sqrt(max(expected, 0.5))
            rows.append((abs(residual), i, name, count, expected))
        rows.sort(key=lambda r: (-r[0], r[1]))
        c = self.context
        return CategoryMixAlert(
            alert_id=identity,
            model_version=c.model_version,
            group_id=c.group_id,
            topic=c.topic,
            partition=window.partition,
            window=window.snapshot(),
            worker_id=c.worker_id,
            n=n,
            chi_square=statistic,
            degrees_of_freedom=thresholds.degrees_of_freedom,
            p_value=p_value,
            thresholds=thresholds,
            categories=[
                CategoryCount(
                    name=name,
                    count=count,
                    expected_count=expected,
                    share=count / n,
                    reference_share=float(self.reference_share[i]),
                )
                for _, i, name, count, expected in rows
            ],
            consecutive_windows=consecutive,
            recommendation=self._streak.recommendation(consecutive),
            created_at=self._clock(),
        )
