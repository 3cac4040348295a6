"""Per-category decision thresholds tuned on the validation split.

Contract: for each category, the threshold maximizes that category's F1 of the decision
`probability >= threshold` on validation rows, searched over the observed probabilities clipped to
[0.05, 0.95]; ties go to the higher threshold (fewer false alarms). Categories with no validation
positives keep the default 0.5.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5
FLOOR, CEILING = 0.05, 0.95  # never accept nearly everything nor nearly nothing


def best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """F1-optimal threshold for one category, in O(n log n)."""
    positives = int(y.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD
    clipped = np.clip(p, FLOOR, CEILING)
    order = np.argsort(-clipped, kind="stable")
    ranked, hits = clipped[order], y[order].astype(np.int64)
    tp = np.cumsum(hits)
    decided = np.arange(1, len(ranked) + 1)
    # Only the last row of a run of equal scores is a reachable cut (>= takes the whole run).
    last_of_run = np.append(ranked[1:] != ranked[:-1], True)
    f1 = np.where(last_of_run, 2 * tp / (decided + positives), -1.0)
    best = np.flatnonzero(f1 == f1.max())[0]  # first = highest threshold among ties
    return float(ranked[best])


def tune_thresholds(probabilities: np.ndarray, targets: np.ndarray) -> list[float]:
    return [best_threshold(probabilities[:, c], targets[:, c]) for c in range(probabilities.shape[1])]
