"""The classical baseline: TF-IDF word 1-2 grams + char_wb 2-5 grams, linear SVM.

Trained on the bundle's own train split, scored with the same `metrics.score` as the model.
Single-label data: one multi-class LinearSVC. Multi-label data: one-vs-rest, every label with a
positive margin, and always the top one (the same decision rule as the model's decoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

from export.metrics import target_matrix


class TfidfBaseline:
    def __init__(self, labels: Sequence[str], seed: int = 13) -> None:
        self.labels = list(labels)
        self.seed = seed
        self.features = FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
        ])
        self.multi_label = False
        self.model: LinearSVC | OneVsRestClassifier | None = None

    def fit(self, texts: Sequence[str], label_sets: Sequence[Sequence[str]]) -> TfidfBaseline:
        x = self.features.fit_transform(texts)
        self.multi_label = any(len(s) != 1 for s in label_sets)
        if self.multi_label:
            y = target_matrix(label_sets, self.labels).astype(int)
            keep = y.any(axis=0) & ~y.all(axis=0)
            self._columns = np.flatnonzero(keep)
            self.model = OneVsRestClassifier(LinearSVC(C=1.0, random_state=self.seed)).fit(x, y[:, keep])
        else:
            self.model = LinearSVC(C=1.0, random_state=self.seed).fit(x, [s[0] for s in label_sets])
        return self

    def margins(self, texts: Sequence[str]) -> np.ndarray:
        """Decision margins [N, C] aligned with `labels` (-inf where a label was not trainable)."""
        assert self.model is not None, "fit first"
        x = self.features.transform(texts)
        out = np.full((len(texts), len(self.labels)), -np.inf)
        raw = self.model.decision_function(x)
        if self.multi_label:
            out[:, self._columns] = raw
        else:
            classes = list(self.model.classes_)
            raw = raw if raw.ndim == 2 else np.stack([-raw, raw], axis=1)
            for j, label in enumerate(classes):
                out[:, self.labels.index(label)] = raw[:, j]
        return out

    def decide(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(decisions bool [N, C], top index [N])."""
        margins = self.margins(texts)
        top = margins.argmax(axis=1)
        decisions = margins > 0 if self.multi_label else np.zeros_like(margins, dtype=bool)
        decisions[np.arange(len(top)), top] = True
        return decisions, top
