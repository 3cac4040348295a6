"""export.drift_index: tau as an upper confidence bound of the quantile, one row per product."""

from __future__ import annotations

import numpy as np
import pytest

from export.drift_index import calibrate, first_of_each, upper_quantile_bound
from stream_app.core.centroids import CentroidIndex


@pytest.mark.parametrize(("n", "quantile"), [(300, 0.99), (3400, 0.99), (500, 0.9)])
def test_the_bound_covers_the_true_quantile_at_least_95_percent_of_the_time(n: int, quantile: float) -> None:
    rng = np.random.default_rng(7)
    draws = 2000
    covered = sum(upper_quantile_bound(rng.uniform(size=n), quantile) >= quantile for _ in range(draws))
    # Distribution-free: coverage >= 0.95 (discreteness makes it a little more); 3 sigma of 2,000 draws.
    assert covered / draws >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / draws), covered / draws
    sample = [np.quantile(rng.uniform(size=n), quantile) >= quantile for _ in range(draws)]
    assert np.mean(sample) < 0.8  # the plain sample quantile does not: it is the bias being fixed


def test_the_bound_is_an_order_statistic_close_to_the_quantile_for_many_rows() -> None:
    values = np.random.default_rng(1).uniform(size=3400)
    bound = upper_quantile_bound(values, 0.99)
    assert bound in values
    assert np.quantile(values, 0.99) <= bound <= np.quantile(values, 0.995)


def test_too_few_rows_give_the_largest_value() -> None:
    values = np.arange(50, dtype=float)  # P(Binomial(50, 0.99) < 50) = 1 - 0.99**50 = 0.39 < 0.95
    assert upper_quantile_bound(values, 0.99) == 49.0


def test_first_of_each_keeps_the_first_row_of_every_product() -> None:
    assert first_of_each(["b", "a", "b", 3, "a", "3", "c"]).tolist() == [0, 1, 3, 6]


def test_calibration_counts_products_not_rows() -> None:
    centroids = np.eye(4, dtype=np.float32)
    index = CentroidIndex.from_centroids(centroids)
    embeddings = np.repeat(centroids[:2], [8, 1], axis=0)  # product p0 listed 8 times, p1 once
    ids = ["p0"] * 8 + ["p1"]
    by_row = calibrate(index, embeddings, np.zeros(9, dtype=np.int64), 2, 0.5, n_fit=10)
    by_product = calibrate(index, embeddings, np.zeros(9, dtype=np.int64), 2, 0.5, n_fit=10, product_ids=ids)
    assert by_row.n_calibration == 9 and by_product.n_calibration == 2
    assert by_product.centroid_share == [0.5, 0.5, 0.0, 0.0]
    assert by_row.centroid_share == pytest.approx([8 / 9, 1 / 9, 0.0, 0.0])
