"""Scores and the paired bootstrap of the model against the baseline."""

from __future__ import annotations

import numpy as np

from export.metrics import macro_f1_difference, score

LABELS = ["a", "b", "c"]


def decisions_of(label_sets: list[tuple[str, ...]]) -> np.ndarray:
    return np.array([[label in s for label in LABELS] for s in label_sets])


def test_identical_decisions_differ_by_nothing() -> None:
    truth = [("a",), ("b",), ("c",), ("a",)] * 10
    guess = decisions_of([("a",), ("a",), ("c",), ("b",)] * 10)
    diff = macro_f1_difference(LABELS, guess, guess, truth, resamples=200)
    assert diff["model_minus_baseline"] == 0 and diff["ci95"] == [0.0, 0.0] and diff["share_not_better"] == 1.0


def test_a_clearly_better_model_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(1)
    truth = [(LABELS[i],) for i in rng.integers(0, 3, 300)]
    perfect = decisions_of(truth)
    noisy = decisions_of([(LABELS[rng.integers(0, 3)],) if rng.random() < 0.5 else t for t in truth])
    diff = macro_f1_difference(LABELS, perfect, noisy, truth, resamples=300)
    assert diff["ci95"][0] > 0 and diff["share_not_better"] == 0.0
    assert diff["model_minus_baseline"] == score(LABELS, perfect, perfect.argmax(1), truth)["macro_f1"] - \
        score(LABELS, noisy, noisy.argmax(1), truth)["macro_f1"]


def test_groups_resample_a_products_rows_together() -> None:
    """Ten products with 20 identical rows each: grouped resampling is as wide as ten rows would be."""
    truth = [("a",)] * 100 + [("b",)] * 100
    model = decisions_of([("a",)] * 100 + [("b",)] * 100)
    baseline = decisions_of([("a",)] * 100 + [("a",)] * 60 + [("b",)] * 40)
    groups = [f"p{i // 20}" for i in range(200)]
    by_row = macro_f1_difference(LABELS, model, baseline, truth, resamples=300)
    by_group = macro_f1_difference(LABELS, model, baseline, truth, groups=groups, resamples=300)
    def width(d: dict) -> float:
        return d["ci95"][1] - d["ci95"][0]

    assert width(by_group) > 2 * width(by_row)
