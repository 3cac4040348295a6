"""Exact binomial tail helpers for the outlier-rate test.

In a window of ``W`` in-distribution messages, each message is an outlier (cosine distance beyond
``tau``) with probability ``p0 = 1 - quantile``, so the outlier count is Binomial(W, p0) if messages
are independent. The window drifts when the count reaches the critical count ``c``: the smallest
count whose upper tail probability is at most ``alpha``. Exact, via ``scipy.stats.binom.sf``.
"""

from __future__ import annotations

from scipy.stats import binom


def _check(window: int, p0: float) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 (expected outlier rate) must be in (0, 1), got {p0}")


def tail_probability(count: int, window: int, p0: float) -> float:
    """P(Binomial(window, p0) >= count); 1.0 for count <= 0, 0.0 for count > window."""
    _check(window, p0)
    if count <= 0:
        return 1.0
    if count > window:
        return 0.0
    # sf(k) = P(X > k), so P(X >= count) = sf(count - 1).
    return float(binom.sf(count - 1, window, p0))


def critical_count(window: int, p0: float, alpha: float) -> int:
    """Smallest ``c`` with P(Binomial(window, p0) >= c) <= alpha.

    May return ``window + 1`` (no count is significant enough: the test can never fire) when
    ``p0 ** window > alpha``. Raises ``ValueError`` for alpha outside (0, 1).
    """
    _check(window, p0)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    # The inverse survival function gives a starting point; the exact tail settles ties and
    # floating-point edge cases either way.
    c = int(binom.isf(alpha, window, p0)) + 1
    c = max(1, min(c, window + 1))
    while c > 1 and tail_probability(c - 1, window, p0) <= alpha:
        c -= 1
    while c <= window and tail_probability(c, window, p0) > alpha:
        c += 1
    return c
