"""`CentroidIndex`: nearest centroid and cosine distance, within [0, 2] whatever the rounding."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.core.centroids import CentroidIndex
from tests.support.examples import examples


def normalized(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def test_an_embedding_equal_to_a_centroid_is_at_distance_zero_not_below() -> None:
    """In float32 <v, v> of a unit vector rounds above 1 for about half of all vectors: the soak met three."""
    centroids = normalized(2000, 384, seed=0)
    distance, nearest = CentroidIndex.from_centroids(centroids).search(centroids)
    assert np.array_equal(nearest, np.arange(2000))
    assert distance.min() >= 0.0 and distance.max() <= 1e-5


@settings(max_examples=examples(50), deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 64), dim=st.sampled_from([8, 64, 384]),
       scale=st.floats(-3, 3).filter(lambda x: abs(x) > 1e-3))
def test_distance_is_the_cosine_distance_to_the_nearest_centroid(seed: int, k: int, dim: int, scale: float) -> None:
    centroids = normalized(k, dim, seed)
    queries = normalized(32, dim, seed + 1)
    queries[0] = centroids[0]
    queries[1] = -centroids[0]  # the farthest point there is: distance 2
    index = CentroidIndex.from_centroids(centroids * scale if scale > 0 else centroids)
    distance, nearest = index.search(queries)
    expected = 1.0 - (queries.astype(np.float64) @ centroids.astype(np.float64).T)
    assert np.all((distance >= 0.0) & (distance <= 2.0))
    np.testing.assert_allclose(distance, np.clip(expected.min(axis=1), 0, 2), atol=2e-5)
    best = expected.min(axis=1)
    assert np.all(expected[np.arange(len(queries)), nearest] <= best + 2e-5)  # ties may pick either


def test_empty_batch_and_wrong_dimension() -> None:
    index = CentroidIndex.from_centroids(normalized(4, 8, seed=3))
    distance, nearest = index.search(np.zeros((0, 8), np.float32))
    assert distance.shape == (0,) and nearest.shape == (0,)
    with pytest.raises(ValueError, match=r"does not match centroid dim 8"):
        index.search(np.zeros((2, 16), np.float32))


def test_save_and_load_keep_the_index(tmp_path: Path) -> None:
    centroids = normalized(16, 32, seed=5)
    index = CentroidIndex.from_centroids(centroids)
    index.save(tmp_path / "centroids.faiss")
    loaded = CentroidIndex.load(tmp_path / "centroids.faiss")
    queries = normalized(10, 32, seed=6)
    assert loaded.k == 16 and loaded.dim == 32
    assert [a.tolist() for a in loaded.search(queries)] == [a.tolist() for a in index.search(queries)]


def test_an_l2_index_is_refused() -> None:
    with pytest.raises(ValueError, match="inner-product"):
        CentroidIndex(faiss.IndexFlatL2(8))
