"""Scores of a multi-label decision against true label sets.

Contract: labels the model does not know (present in the data, absent from the bundle) stay in the
label space with no predictions, so they count as misses instead of silently vanishing; they are
listed under `unknown_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support


def target_matrix(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    position = {label: i for i, label in enumerate(labels)}
    y = np.zeros((len(label_sets), len(labels)), dtype=bool)
    for row, label_set in enumerate(label_sets):
        for label in label_set:
            if label in position:
                y[row, position[label]] = True
    return y


def score(model_labels: Sequence[str], decisions: np.ndarray, top_indices: np.ndarray,
          label_sets: Sequence[Sequence[str]]) -> dict:
    """accuracy (top-1 in the true set), micro/macro F1 of the decisions, per-category P/R/F1."""
    known = set(model_labels)
    unknown = sorted({label for s in label_sets for label in s if label not in known})
    all_labels = list(model_labels) + unknown
    y = target_matrix(label_sets, all_labels)
    d = np.zeros_like(y)
    d[:, : len(model_labels)] = decisions
    hits = y[np.arange(len(y)), np.asarray(top_indices, dtype=np.int64)]
    precision, recall, f1, support = precision_recall_fscore_support(y, d, average=None, zero_division=0)
    micro = precision_recall_fscore_support(y, d, average="micro", zero_division=0)[2]
    present = support > 0  # macro over categories that occur in this data
    return {
        "rows": int(len(y)),
        "accuracy": float(hits.mean()) if len(y) else 0.0,
        "micro_f1": float(micro),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_category": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(all_labels)
        },
        "unknown_labels": unknown,
        "rows_with_unknown_label": int(sum(any(label not in known for label in s) for s in label_sets)),
    }
