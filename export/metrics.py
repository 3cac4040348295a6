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


def label_space(model_labels: Sequence[str], decisions: np.ndarray, label_sets: Sequence[Sequence[str]]
                ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(all labels, truth [N, L], decisions [N, L]): the model's labels, then the unknown ones
    (present in the data, never decided, so they count as misses)."""
    known = set(model_labels)
    unknown = sorted({label for s in label_sets for label in s if label not in known})
    all_labels = list(model_labels) + unknown
    y = target_matrix(label_sets, all_labels)
    d = np.zeros_like(y)
    d[:, : len(model_labels)] = decisions
    return all_labels, y, d


def macro_f1(y: np.ndarray, d: np.ndarray) -> float:
    """Macro-F1 over the categories that occur in `y` (a category absent from the data has no F1)."""
    f1 = precision_recall_fscore_support(y, d, average=None, zero_division=0, labels=list(range(y.shape[1])))[2]
    present = y.any(axis=0)
    return float(f1[present].mean()) if present.any() else 0.0


def score(model_labels: Sequence[str], decisions: np.ndarray, top_indices: np.ndarray,
          label_sets: Sequence[Sequence[str]]) -> dict:
    """accuracy (top-1 in the true set), micro/macro F1 of the decisions, per-category P/R/F1."""
    all_labels, y, d = label_space(model_labels, decisions, label_sets)
    known = set(model_labels)
    hits = y[np.arange(len(y)), np.asarray(top_indices, dtype=np.int64)]
    precision, recall, f1, support = precision_recall_fscore_support(y, d, average=None, zero_division=0)
    micro = precision_recall_fscore_support(y, d, average="micro", zero_division=0)[2]
    return {
        "rows": len(y),
        "accuracy": float(hits.mean()) if len(y) else 0.0,
        "micro_f1": float(micro),
        "macro_f1": macro_f1(y, d),
        "per_category": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(all_labels)
        },
        "unknown_labels": all_labels[len(model_labels):],
        "rows_with_unknown_label": int(sum(any(label not in known for label in s) for s in label_sets)),
    }


def macro_f1_difference(model_labels: Sequence[str], model_decisions: np.ndarray, baseline_decisions: np.ndarray,
                        label_sets: Sequence[Sequence[str]], groups: Sequence[str] | None = None,
                        resamples: int = 1000, seed: int = 0) -> dict:
    """Macro-F1 of the model minus the baseline's, with a paired bootstrap over the same rows.

    Why: on a few thousand rows with small categories, a point or two of macro-F1 is within the
    noise; the interval says whether a difference is one. Rows are resampled by group (product id)
    when given, since a product's rows are not independent. Returns the point difference, the 95%
    percentile interval and the share of resamples where the model is not better.
    """
    _, y, a = label_space(model_labels, model_decisions, label_sets)
    b = label_space(model_labels, baseline_decisions, label_sets)[2]

    def macro(rows: np.ndarray, d: np.ndarray) -> float:
        return macro_f1(y[rows], d[rows])

    everything = np.arange(len(y))
    point = macro(everything, a) - macro(everything, b)
    keys = np.asarray(groups if groups is not None else everything.astype(str))
    _, member_of = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(member_of == g) for g in range(member_of.max() + 1)] if len(y) else []
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples if members else 0):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        diffs.append(macro(rows, a) - macro(rows, b))
    diffs_arr = np.asarray(diffs)
    return {
        "model_minus_baseline": point,
        "ci95": [float(np.percentile(diffs_arr, 2.5)), float(np.percentile(diffs_arr, 97.5))] if diffs else None,
        "share_not_better": float((diffs_arr <= 0).mean()) if diffs else None,
        "resamples": len(diffs),
        "grouped_by": "group" if groups is not None else "row",
    }
