"""Nearest-centroid search for drift scoring.

Contract: centroids are L2-normalized and held in a faiss inner-product index; for L2-normalized
embeddings the returned distance is the cosine distance 1 - <e, c> in [0, 2].
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


class CentroidIndex:
    """Wraps a faiss IndexFlatIP of k normalized centroids."""

    def __init__(self, index: faiss.Index) -> None:
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("centroid index must use the inner-product metric")
        self.index = index

    @classmethod
    def load(cls, path: Path) -> CentroidIndex:
        return cls(faiss.read_index(str(path)))

    @classmethod
    def from_centroids(cls, centroids: np.ndarray) -> CentroidIndex:
        vectors = np.ascontiguousarray(centroids, dtype=np.float32).copy()
        faiss.normalize_L2(vectors)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index)

    @property
    def k(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance [B] float32, nearest centroid id [B] int64) for normalized embeddings [B, d]."""
        queries = np.ascontiguousarray(embeddings, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"embeddings shape {queries.shape} does not match centroid dim {self.dim}")
        if len(queries) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        similarity, ids = self.index.search(queries, 1)
        # Rounding puts <e, c> of a vector with itself at up to ~1 + 1e-6: clip to the cosine range, or an
        # embedding equal to a centroid (a one-product cluster) would get a negative distance, which the
        # categories record refuses.
        distance = np.clip(1.0 - similarity[:, 0], 0.0, 2.0)
        return distance.astype(np.float32), ids[:, 0].astype(np.int64)
