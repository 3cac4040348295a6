"""The drift reference: k-means centroids of training embeddings, calibrated on the validation split.

Contract: k-means is fit on training-split embeddings only; tau, the reference distance quantiles,
the per-centroid shares and the per-category shares come from the validation split, which k-means
never saw (distances on the fit data are biased low, which would make tau too tight).
"""

from __future__ import annotations

import faiss
import numpy as np

from stream_app.core.bundle import DriftCalibration
from stream_app.core.centroids import CentroidIndex

DEFAULT_K = 64
MIN_POINTS_PER_CENTROID = 40  # faiss warns below 39: centroids of fewer points are noise
MAX_POINTS_PER_CENTROID = 256  # faiss.Kmeans samples k * 256 points of a larger set: embed no more than that
REFERENCE_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def choose_k(n_fit: int, requested: int = DEFAULT_K) -> int:
    return max(2, min(requested, n_fit // MIN_POINTS_PER_CENTROID))


def sample_rows(n: int, at_most: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most `at_most` of `n` rows (all of them when None or n <= at_most)."""
    if at_most is None or n <= at_most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=at_most, replace=False))


def fit_centroids(train_embeddings: np.ndarray, k: int, seed: int) -> CentroidIndex:
    x = np.ascontiguousarray(train_embeddings, dtype=np.float32)
    kmeans = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    kmeans.train(x)
    return CentroidIndex.from_centroids(kmeans.centroids)


def calibrate(index: CentroidIndex, val_embeddings: np.ndarray, val_top_indices: np.ndarray, num_labels: int,
              quantile: float, n_fit: int) -> DriftCalibration:
    distances, nearest = index.search(val_embeddings)
    centroid_counts = np.bincount(nearest, minlength=index.k)
    category_counts = np.bincount(np.asarray(val_top_indices, dtype=np.int64), minlength=num_labels)
    return DriftCalibration(
        k=index.k,
        quantile=quantile,
        tau=float(np.quantile(distances, quantile)),
        distance_quantiles={f"{q:g}": float(np.quantile(distances, q)) for q in REFERENCE_QUANTILES},
        centroid_share=(centroid_counts / centroid_counts.sum()).tolist(),
        category_share=(category_counts / category_counts.sum()).tolist(),
        n_fit=n_fit,
        n_calibration=len(distances),
    )
