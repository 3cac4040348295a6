"""Per-category thresholds -> a ranked list of categories.

Contract: `ranked_categories` returns every category whose probability is at or above its threshold,
ranked by probability (ties by label order), and always the top category first; when the top one is
below its threshold it is marked `above_threshold=False`, so consumers can tell a confident decision
from a best guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CategoryScore:
    name: str
    score: float
    above_threshold: bool


def ranked_categories(
    probabilities: np.ndarray, labels: Sequence[str], thresholds: Sequence[float]
) -> list[CategoryScore]:
    """The categories of one row of probabilities (shape [C]), as the module docstring says."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (len(labels),) or len(thresholds) != len(labels):
        raise ValueError(f"probabilities shape {probs.shape} does not match {len(labels)} labels/thresholds")
    order = np.argsort(-probs, kind="stable")
    above = probs >= np.asarray(thresholds, dtype=np.float64)
    top = int(order[0])
    chosen = [int(i) for i in order if above[i] or i == top]
    return [CategoryScore(labels[i], float(probs[i]), bool(above[i])) for i in chosen]


def decision_matrix(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Vectorized decision for a batch [B, C]: the same label sets `ranked_categories` returns, as booleans."""
    probs = np.asarray(probabilities)
    decided = probs >= np.asarray(thresholds)[None, :]
    top = probs.argmax(axis=1)
    decided[np.arange(len(probs)), top] = True
    return decided
