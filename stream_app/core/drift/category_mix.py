"""Category-mix drift: chi-square goodness of fit of a window's top categories against the reference.

At the end of each window (``W`` consecutive offsets of one input partition, aligned to offsets:
see ``monitor``), the counts of the predicted top categories of its ``n <= W`` observations (dead
letters bring none) are compared with ``n * reference_share`` (Pearson chi-square,
``scipy.stats.chisquare``); the window drifts when ``p <= alpha``. A window that does not drift is
clean if it had at least ``MIN_CLEAN_SHARE`` of W observations (else inconclusive); the first clean
window after a drifting one yields a ``resolved`` decision naming it.

Small reference shares: categories are MERGED, not floored. The chi-square approximation needs
expected counts of about 5 or more (Cochran's rule); flooring a zero share with an epsilon would
leave an expected count near 0, and a single message of that category would give an enormous
statistic and a false alarm. So categories with ``W * share < min_expected`` are pooled into one
bin; if that pool is still below ``min_expected`` it is merged with the next smallest category,
until every bin qualifies. The plan is fixed at construction for full windows (it depends only on W
and the shares); a window with fewer observations (dead letters) gets its own plan for its n.
The record of a firing decision still lists every category with its own count and expected count.

Default alpha = 1e-6, for W = 500 and the Elo7 reference mix (6 categories, df = 5): the critical
chi-square is 35.9. Against the 2019 Elo7 shift (Bebê 18 % -> 10 %, Papel e Cia 7 % -> 12 %) the
power is 0.66 per window of 500 (0.88 within two windows) and 0.998 per window of 1,000. The far tail
of the chi-square approximation is only approximate; check false alarms empirically with
``export.false_alarms.simulate_false_alarm_rate`` (build time).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite

import numpy as np
from scipy.stats import chi2, chisquare

from stream_app.core.drift.detector import Decision
from stream_app.core.drift.observation import Observation, WindowEnd
from stream_app.core.drift.windowed import WindowedTest

DEFAULT_CATEGORY_ALPHA = 1e-6
MIN_EXPECTED = 5.0
CATEGORY_MIX = "category_mix"


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


class CategoryMixDetector(WindowedTest):
    """Chi-square test of the top-category mix over the aligned windows of ONE partition (a ``Detector``).

    ``update(observation)`` counts observations (never decides mid-window); at a ``WindowEnd`` it
    returns a firing decision (``p <= alpha``; ``statistic`` = chi-square, ``threshold`` = its critical
    value at the window's degrees of freedom), a resolved one (first clean window after a firing one)
    or None. ``reference_share[i]`` is the calibration share of label ``labels[i]`` (normalized here
    if it does not sum to exactly 1).
    """

    name = CATEGORY_MIX

    def __init__(
        self,
        window_size: int,
        reference_share: Sequence[float],
        labels: Sequence[str],
        alpha: float = DEFAULT_CATEGORY_ALPHA,
        min_expected: float = MIN_EXPECTED,
    ) -> None:
        super().__init__(window_size)
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
        self.reference_share = shares / shares.sum()
        self.labels = list(labels)
        self.alpha = float(alpha)
        self.min_expected = float(min_expected)
        self.bins = merge_plan(list(self.window_size * self.reference_share), self.min_expected)
        self.counts = np.zeros(len(self.labels), dtype=np.int64)  # per label, of the open window

    @property
    def testable(self) -> bool:
        """False when merging left fewer than two bins (window too small for these shares)."""
        return len(self.bins) >= 2

    def plan(self, n: int) -> list[list[int]]:
        """The merged bins for a window of ``n`` observations (the fixed plan for a full window)."""
        return self.bins if n == self.window_size else merge_plan(list(n * self.reference_share), self.min_expected)

    def critical_chi_square(self, degrees_of_freedom: int) -> float:
        """The chi-square value whose p-value is alpha."""
        return float(chi2.isf(self.alpha, degrees_of_freedom))

    def test(self, counts: np.ndarray, bins: list[list[int]] | None = None) -> tuple[float, float]:
        """Chi-square statistic and p-value of per-label ``counts`` over the merged ``bins``."""
        bins = self.bins if bins is None else bins
        n = float(counts.sum())
        observed = np.array([counts[b].sum() for b in bins], dtype=float)
        expected = np.array([self.reference_share[b].sum() * n for b in bins], dtype=float)
        result = chisquare(observed, expected)
        return float(result.statistic), float(result.pvalue)

    def _observe(self, observation: Observation, window_start: int) -> None:
        """Count one observation; the verdict comes at the window's end."""
        if not 0 <= observation.top_index < len(self.labels):
            raise ValueError(
                f"top_index {observation.top_index} of product {observation.product_id!r} is outside the "
                f"{len(self.labels)} labels"
            )
        self.counts[observation.top_index] += 1

    def _judge(self, window: WindowEnd) -> Decision | None:
        """A firing decision if the mix drifted, a resolved one if a clean window ends an episode."""
        n = int(self.counts.sum())
        bins = self.plan(n)
        if n == 0 or len(bins) < 2:
            return None  # nothing to test: inconclusive
        statistic, p_value = self.test(self.counts, bins)
        test = (statistic, self.critical_chi_square(len(bins) - 1), n, p_value)
        offsets = (window.start_offset, window.end_offset)
        if p_value <= self.alpha:
            return self._decision(offsets, *test)
        if (ended := self._ended_episode(window, n)) is None:
            return None
        return self._decision(offsets, *test, ended=ended)

    def _forget_window(self) -> None:
        self.counts = np.zeros(len(self.labels), dtype=np.int64)
