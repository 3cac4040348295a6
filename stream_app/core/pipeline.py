"""Texts in, decoded categories and per-message drift scores out. Pure: no Kafka, no asyncio.

Contract: `Pipeline.predict(texts)` returns one `Prediction` per text, in order. It is the single
code path shared by the worker, the offline evaluation and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_app.core.bundle import Bundle
from stream_app.core.centroids import CentroidIndex
from stream_app.core.decoding import CategoryScore, ranked_categories
from stream_app.core.model import ModelOutput, OnnxCategorizer


@dataclass(frozen=True, slots=True)
class DriftScore:
    distance: float
    nearest_centroid: int
    outlier: bool


@dataclass(frozen=True, slots=True)
class Prediction:
    categories: list[CategoryScore]
    top_index: int
    drift: DriftScore

    @property
    def top_category(self) -> str:
        return self.categories[0].name


class Pipeline:
    """The bundle's model, decoder and centroid index, ready to serve."""

    def __init__(self, bundle: Bundle, threads: int = 2, batch_size: int = 32, use_fp32: bool = False) -> None:
        manifest = bundle.manifest
        model_path = bundle.fp32_model_path if use_fp32 else bundle.model_path
        if model_path is None:
            raise ValueError(f"bundle {bundle.path} has no fp32 model")
        self.bundle = bundle
        self.labels = list(manifest.labels)
        self.thresholds = list(manifest.thresholds)
        self.tau = manifest.drift.tau
        self.categorizer = OnnxCategorizer(model_path, bundle.tokenizer_path, manifest.max_tokens, threads, batch_size)
        self.centroids = CentroidIndex.load(bundle.centroids_path)
        if self.centroids.dim != manifest.embedding_dim:
            raise ValueError(
                f"{bundle.centroids_path}: dim {self.centroids.dim} != embedding_dim {manifest.embedding_dim}"
            )

    def run(self, texts: Sequence[str]) -> ModelOutput:
        """Raw model outputs (embeddings and probabilities)."""
        return self.categorizer.run(texts)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predictions_from(self.run(texts))

    def predictions_from(self, output: ModelOutput) -> list[Prediction]:
        """One `Prediction` per row of ``output``: its ranked categories and its drift score."""
        distances, nearest = self.centroids.search(output.embeddings)
        tops = np.argmax(output.probabilities, axis=1) if len(output.probabilities) else []
        return [
            Prediction(
                categories=ranked_categories(output.probabilities[i], self.labels, self.thresholds),
                top_index=int(tops[i]),
                drift=DriftScore(float(distances[i]), int(nearest[i]), bool(distances[i] > self.tau)),
            )
            for i in range(len(distances))
        ]
