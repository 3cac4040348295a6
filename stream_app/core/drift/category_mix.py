"""Category-mix drift: a chi-square test of a window's top categories against the reference's.

At the end of each window (``W`` consecutive offsets of one input partition, aligned to offsets:
see ``monitor``), the counts of the predicted top categories of its ``n <= W`` observations (dead
letters bring none) are tested against the reference mix; the window drifts when ``p <= alpha``. A
window that does not drift is clean if it had at least ``MIN_CLEAN_SHARE`` of W observations (else
inconclusive); the first clean window after a drifting one yields a ``resolved`` decision naming it.

The reference is a sample too. Its shares come from the bundle's ``n_calibration`` validation
products, so they carry their own sampling error; a goodness-of-fit test against them as if they
were exact sees that error as drift: the statistic's variance grows by ``1 + n / m`` for ``m``
reference products (2.6x for a window of 500 against 307 products, 1.15x against 3,400), and at
alpha = 1e-6 the false alarms grow ~8x (3,400 products) to ~18,000x (307), by the chi-square tail
scaled by that factor. With ``reference_count`` = m the test is Pearson's two-sample (homogeneity)
chi-square of the 2 x k table (window counts, reference counts ``m * share``), ``mix_statistic``;
without it (``None``), the goodness of fit of the shares as exact.

Small reference shares: categories are MERGED, not floored. The chi-square approximation needs
expected counts of about 5 or more (Cochran's rule); flooring a zero share with an epsilon would
leave an expected count near 0, and a single message of that category would give an enormous
statistic and a false alarm. So categories with ``min(n, m) * share < min_expected`` are pooled into
one bin; if that pool is still below ``min_expected`` it is merged with the next smallest category,
until every bin qualifies in both rows. The plan is fixed at construction for full windows (it
depends only on W, m and the shares); a window with fewer observations (dead letters) gets its own
plan for its n. The record of a firing decision still lists every category with its own count and
expected count.

Default alpha = 1e-6 (the critical chi-square at df = 5 is 35.9). The far tail of the chi-square
approximation is only approximate; ``export.false_alarms.simulate_false_alarms`` (build time) and
tests/export/test_false_alarms_real.py measure false alarms on real held-out products.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isfinite

import numpy as np
from scipy.stats import chi2

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


def mix_statistic(observed: np.ndarray, reference_share: np.ndarray, reference_count: int | None) -> np.ndarray:
    """Pearson chi-square of window counts against the reference mix, for one window or many.

    ``observed``: counts per bin, shape ``[..., k]`` (each row one window of ``n`` = its sum);
    ``reference_share``: the reference share of each bin, shape ``[k]``, summing to 1. With
    ``reference_count`` = m, the homogeneity statistic of the 2 x k table (the window's counts and
    the reference's ``R = m * share``), in closed form ``sum_j (m O_j - n R_j)^2 / (n m (O_j + R_j))``;
    with None, the goodness of fit ``sum_j (O_j - n s_j)^2 / (n s_j)``. Both have k - 1 degrees of
    freedom. Returns one statistic per window.
    """
    observed = np.asarray(observed, dtype=float)
    share = np.asarray(reference_share, dtype=float)
    n = observed.sum(axis=-1, keepdims=True)
    if reference_count is None:
        expected = n * share
        return np.asarray((((observed - expected) ** 2) / expected).sum(axis=-1))
    m = float(reference_count)
    reference = m * share
    return np.asarray((((m * observed - n * reference) ** 2) / (n * m * (observed + reference))).sum(axis=-1))


class CategoryMixDetector(WindowedTest):
    """Chi-square test of the top-category mix over the aligned windows of ONE partition (a ``Detector``).

    ``update(observation)`` counts observations (never decides mid-window); at a ``WindowEnd`` it
    returns a firing decision (``p <= alpha``; ``statistic`` = chi-square, ``threshold`` = its critical
    value at the window's degrees of freedom), a resolved one (first clean window after a firing one)
    or None. ``reference_share[i]`` is the calibration share of label ``labels[i]`` (normalized here
    if it does not sum to exactly 1); ``reference_count`` the number of products the shares were
    counted on (the manifest's ``n_calibration``), or None to take them as exact (module docstring).
    """

    name = CATEGORY_MIX

    def __init__(
        self,
        window_size: int,
        reference_share: Sequence[float],
        labels: Sequence[str],
        alpha: float = DEFAULT_CATEGORY_ALPHA,
        min_expected: float = MIN_EXPECTED,
        reference_count: int | None = None,
    ) -> None:
        super().__init__(window_size)
        if reference_count is not None and reference_count < 1:
            raise ValueError(f"reference_count must be >= 1 (products the shares come from), got {reference_count}")
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
        self.reference_count = reference_count
        self.bins = self._merge(self.window_size)
        self.counts = np.zeros(len(self.labels), dtype=np.int64)  # per label, of the open window

    @property
    def testable(self) -> bool:
        """False when merging left fewer than two bins (window too small for these shares)."""
        return len(self.bins) >= 2

    def plan(self, n: int) -> list[list[int]]:
        """The merged bins for a window of ``n`` observations (the fixed plan for a full window)."""
        return self.bins if n == self.window_size else self._merge(n)

    def _merge(self, n: int) -> list[list[int]]:
        """Bins whose expected counts reach ``min_expected`` in the window of ``n`` and in the reference."""
        smaller = n if self.reference_count is None else min(n, self.reference_count)
        return merge_plan(list(smaller * self.reference_share), self.min_expected)

    def critical_chi_square(self, degrees_of_freedom: int) -> float:
        """The chi-square value whose p-value is alpha."""
        return float(chi2.isf(self.alpha, degrees_of_freedom))

    def statistic(self, counts: np.ndarray, bins: list[list[int]] | None = None) -> np.ndarray:
        """Chi-square statistic of per-label ``counts`` (shape ``[..., labels]``: one window or many)
        over the merged ``bins`` (default: the plan of a full window)."""
        bins = self.bins if bins is None else bins
        counts = np.asarray(counts)
        observed = np.stack([counts[..., b].sum(axis=-1) for b in bins], axis=-1).astype(float)
        share = np.array([self.reference_share[b].sum() for b in bins], dtype=float)
        return mix_statistic(observed, share, self.reference_count)

    def test(self, counts: np.ndarray, bins: list[list[int]] | None = None) -> tuple[float, float]:
        """Chi-square statistic and p-value of one window's per-label ``counts`` over ``bins``."""
        bins = self.bins if bins is None else bins
        statistic = float(self.statistic(counts, bins))
        return statistic, float(chi2.sf(statistic, len(bins) - 1))

    def rejects(self, counts: np.ndarray) -> np.ndarray:
        """Per full window (rows of ``counts``, shape ``[..., labels]``): does the test decide drift?
        The decision `update` makes at a full window's end, vectorized for build-time replays."""
        counts = np.asarray(counts)
        if not self.testable:
            return np.zeros(counts.shape[:-1], dtype=bool)
        return np.asarray(chi2.sf(self.statistic(counts), len(self.bins) - 1) <= self.alpha)

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
