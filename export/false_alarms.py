"""Empirical false-alarm rate of the drift detectors on in-distribution data (build time: ``evaluate``).

Held-out in-distribution outlier flags (and top-category indices) are resampled with a circular
block bootstrap into a long synthetic stream: blocks of consecutive messages keep any serial
correlation (a seller's batch of similar listings), which the binomial and chi-square tests ignore.
The stream is cut into windows of W observations (a full window of one partition, no dead letters)
and each is tested exactly as ``OutlierRateDetector`` and ``CategoryMixDetector`` do (vectorized:
same critical count, same merge plan, same statistic; at most one alert per detector per window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_app.core.drift.binomial import critical_count
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.outlier_window import DEFAULT_ALPHA


@dataclass(frozen=True)
class FalseAlarmResult:
    messages: int
    windows: int
    embedding_alarms: int
    category_alarms: int

    @property
    def per_100k(self) -> float:
        """Alarms (both detectors) per 100,000 messages."""
        return (self.embedding_alarms + self.category_alarms) * 100_000 / self.messages


def block_bootstrap_indices(n_source: int, n_out: int, block_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a circular block bootstrap: random starts, ``block_size`` consecutive indices each."""
    if n_source < 1:
        raise ValueError("nothing to resample: the held-out set is empty")
    block = max(1, min(block_size, n_source))
    n_blocks = -(-n_out // block)
    starts = rng.integers(0, n_source, size=n_blocks)
    idx = (starts[:, None] + np.arange(block)[None, :]) % n_source
    return idx.reshape(-1)[:n_out]


def simulate_false_alarms(
    outlier_flags: np.ndarray,
    top_indices: np.ndarray | None,
    window: int,
    p0: float,
    alpha: float = DEFAULT_ALPHA,
    n_messages: int = 1_000_000,
    seed: int = 0,
    block_size: int = 50,
    category_share: Sequence[float] | None = None,
    category_alpha: float = DEFAULT_CATEGORY_ALPHA,
    category_reference_count: int | None = None,
) -> FalseAlarmResult:
    """Count alarms over ``n_messages`` (rounded down to whole windows) of resampled held-out data.

    ``outlier_flags``: bool per held-out message (``distance > tau``). ``top_indices``: top label
    index per message (same order), or None to skip the category-mix test. ``category_share``:
    reference shares per label; default the empirical shares of ``top_indices`` (what a calibration
    on this same held-out set would store). ``category_reference_count``: the products those shares
    were counted on (the manifest's ``n_calibration``), as the worker's detector takes it; None takes
    them as exact (`CategoryMixDetector`).
    """
    flags = np.asarray(outlier_flags, dtype=bool)
    windows = n_messages // window
    if windows < 1:
        raise ValueError(f"n_messages={n_messages} is less than one window of {window}")
    total = windows * window
    rng = np.random.default_rng(seed)
    idx = block_bootstrap_indices(len(flags), total, block_size, rng)

    c = critical_count(window, p0, alpha)
    counts = flags[idx].reshape(windows, window).sum(axis=1)
    embedding_alarms = int((counts >= c).sum())

    category_alarms = 0
    if top_indices is not None:
        tops = np.asarray(top_indices, dtype=np.int64)
        if len(tops) != len(flags):
            raise ValueError(f"top_indices has {len(tops)} entries, outlier_flags {len(flags)}")
        n_labels = int(tops.max()) + 1 if category_share is None else len(category_share)
        share = (
            np.bincount(tops, minlength=n_labels).astype(float)
            if category_share is None
            else np.asarray(category_share, dtype=float)
        )
        detector = CategoryMixDetector(window, list(share), [str(k) for k in range(n_labels)], category_alpha,
                                       reference_count=category_reference_count)
        sampled = tops[idx].reshape(windows, window)
        per_label = np.stack([(sampled == k).sum(axis=1) for k in range(n_labels)], axis=1)
        category_alarms = int(detector.rejects(per_label).sum())
    return FalseAlarmResult(total, windows, embedding_alarms, category_alarms)


def simulate_false_alarm_rate(outlier_flags: np.ndarray, top_indices: np.ndarray | None, window: int, p0: float,
                              **options: Any) -> float:
    """Alarms per 100,000 in-distribution messages (both detectors); ``options`` as ``simulate_false_alarms``."""
    return simulate_false_alarms(outlier_flags, top_indices, window, p0, **options).per_100k
