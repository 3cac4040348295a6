"""The drift reference: k-means centroids of training embeddings, calibrated on the validation split.

Contract: k-means is fit on training-split embeddings only; tau, the reference distance quantiles,
the per-centroid shares and the per-category shares come from the validation split, which k-means
never saw (distances on the fit data are biased low, which would make tau too tight).

Two choices keep "normal traffic almost never alarms" true on products the build never saw:
* **One row per product.** A catalog repeats a product once per listing or click, and repeated
  products are seldom outliers; a stream publishes each product once. Calibrating on rows would
  put tau where the rows' tail is, below the products' (measured on the test bundle: 1.9% of rows
  vs 2.3% of products beyond the same distance).
* **tau is a 95% upper confidence bound of the q-quantile**, not the sample quantile: the smallest
  order statistic d_(k) with P(Binomial(n, q) < k) >= 0.95, so that with 95% confidence at most
  1 - q of in-distribution products lie beyond it. The sample 0.99 quantile of a few hundred
  products is itself noisy (about 3 of them lie beyond it): the test bundle's 314 put 2.3-2.6% of
  held-out products beyond tau, and its window test raised 3.2 false alarms per 100k messages
  (tests/export/test_false_alarms_real.py). With thousands of products the bound is close to the
  sample quantile; with too few to reach 95% it is the largest distance seen.
"""

from __future__ import annotations

import faiss
import numpy as np
from scipy.stats import binom

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


TAU_CONFIDENCE = 0.95


def upper_quantile_bound(values: np.ndarray, quantile: float, confidence: float = TAU_CONFIDENCE) -> float:
    """The smallest order statistic that is >= the ``quantile`` of the distribution ``values`` were drawn
    from with probability >= ``confidence`` (distribution-free; the largest value when n is too small)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    # d_(k) >= the true quantile  <=>  fewer than k of n draws fall below it: Binomial(n, quantile) < k.
    ranks = np.arange(1, n + 1)
    reached = np.nonzero(binom.cdf(ranks - 1, n, quantile) >= confidence)[0]
    return float(ordered[reached[0]] if len(reached) else ordered[-1])


def first_of_each(product_ids: np.ndarray | list[object]) -> np.ndarray:
    """Sorted row indices keeping the first row of every product id."""
    _, first = np.unique(np.asarray([str(p) for p in product_ids]), return_index=True)
    return np.sort(first)


def calibrate(index: CentroidIndex, val_embeddings: np.ndarray, val_top_indices: np.ndarray, num_labels: int,
              quantile: float, n_fit: int, product_ids: np.ndarray | list[object] | None = None) -> DriftCalibration:
    """The drift reference from validation embeddings (module docstring); ``product_ids`` (one per row)
    reduces them to one row per product first."""
    if product_ids is not None:
        keep = first_of_each(product_ids)
        val_embeddings, val_top_indices = val_embeddings[keep], np.asarray(val_top_indices)[keep]
    distances, nearest = index.search(val_embeddings)
    centroid_counts = np.bincount(nearest, minlength=index.k)
    category_counts = np.bincount(np.asarray(val_top_indices, dtype=np.int64), minlength=num_labels)
    return DriftCalibration(
        k=index.k,
        quantile=quantile,
        tau=upper_quantile_bound(distances, quantile),
        distance_quantiles={f"{q:g}": float(np.quantile(distances, q)) for q in REFERENCE_QUANTILES},
        centroid_share=(centroid_counts / centroid_counts.sum()).tolist(),
        category_share=(category_counts / category_counts.sum()).tolist(),
        n_fit=n_fit,
        n_calibration=len(distances),
    )
