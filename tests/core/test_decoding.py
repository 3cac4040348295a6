"""Decoding: thresholds, ranking, the always-present top category, hierarchy labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stream_app.core.decoding import decision_matrix, ranked_categories

LABELS = ["a", "b", "c", "d"]


def test_nothing_above_threshold_returns_top_marked() -> None:
    result = ranked_categories(np.array([0.1, 0.3, 0.2, 0.05]), LABELS, [0.5] * 4)
    assert [(r.name, r.above_threshold) for r in result] == [("b", False)]
    assert result[0].score == pytest.approx(0.3)


def test_several_categories_ranked_by_score() -> None:
    result = ranked_categories(np.array([0.6, 0.9, 0.2, 0.7]), LABELS, [0.5, 0.5, 0.5, 0.8])
    assert [r.name for r in result] == ["b", "a"]  # d is 0.7 < its 0.8 threshold
    assert all(r.above_threshold for r in result)


def test_top_category_below_its_threshold_still_leads() -> None:
    result = ranked_categories(np.array([0.7, 0.6, 0.1, 0.1]), LABELS, [0.8, 0.5, 0.5, 0.5])
    assert [(r.name, r.above_threshold) for r in result] == [("a", False), ("b", True)]


def test_threshold_is_inclusive() -> None:
    assert [r.name for r in ranked_categories(np.array([0.5, 0.1, 0.1, 0.1]), LABELS, [0.5] * 4)] == ["a"]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="labels"):
        ranked_categories(np.array([0.1, 0.2]), LABELS, [0.5] * 4)


@settings(max_examples=200, deadline=None)
@given(
    probs=arrays(np.float64, 4, elements=st.floats(0, 1)),
    thresholds=st.lists(st.floats(0.05, 0.95), min_size=4, max_size=4),
)
def test_ranked_categories_properties(probs: np.ndarray, thresholds: list[float]) -> None:
    result = ranked_categories(probs, LABELS, thresholds)
    assert result, "always at least the top category"
    top = LABELS[int(np.argmax(probs))]
    assert result[0].name == top
    scores = [r.score for r in result]
    assert scores == sorted(scores, reverse=True)
    chosen = {r.name for r in result}
    above = {LABELS[i] for i in range(4) if probs[i] >= thresholds[i]}
    assert chosen == above | {top}
    assert all(r.above_threshold == (r.name in above) for r in result)
    # the batch decision used by evaluation agrees with the per-message decoder
    row = decision_matrix(probs[None, :], thresholds)[0]
    assert {LABELS[i] for i in np.flatnonzero(row)} == chosen


def test_fashion_hierarchy_paths_decode_as_a_chain(datasets_dir) -> None:
    """A confident fashion product decodes to its whole path: master, master/sub, master/sub/article."""
    styles = pd.read_csv(datasets_dir / "fashion" / "styles.csv",
                         usecols=["masterCategory", "subCategory", "articleType"], dtype=str).dropna().head(2000)
    labels = sorted({m for m in styles.masterCategory}
                    | {f"{m}/{s}" for m, s in zip(styles.masterCategory, styles.subCategory, strict=True)}
                    | {f"{m}/{s}/{a}" for m, s, a in styles.itertuples(index=False)})
    row = styles.iloc[0]
    truth = [row.masterCategory, f"{row.masterCategory}/{row.subCategory}",
             f"{row.masterCategory}/{row.subCategory}/{row.articleType}"]
    probs = np.full(len(labels), 0.01)
    for depth, label in enumerate(truth):
        probs[labels.index(label)] = 0.97 - 0.1 * depth
    result = ranked_categories(probs, labels, [0.5] * len(labels))
    assert [r.name for r in result] == truth
