"""Helpers for the model-lifecycle tests: cheap distinct bundle versions made from the test bundle.

A variant is the test bundle's INT8 graph, tokenizer and centroids with a different training record
(so a different content hash, i.e. bundle_version), re-checksummed by the real bundle writer: a real,
loadable bundle that costs a file copy instead of a build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures.bundle import ELO7, make_variant


@pytest.fixture(scope="session")
def variants(test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three distinct, loadable bundle versions (shared, read-only: copy before corrupting)."""
    root = tmp_path_factory.mktemp("variants")
    return [make_variant(test_bundle, root / f"v{i}", f"v{i}") for i in range(3)]


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 seeded Elo7 rows as CSV: its test split (by product id) is ~120 rows."""
    path = tmp_path_factory.mktemp("catalog") / "elo7-small.csv"
    frame = pd.read_parquet(ELO7).sample(n=1200, random_state=5)
    frame[["product_id", "title", "concatenated_tags", "category"]].to_csv(path, index=False)
    return path


@pytest.fixture()
def flip_byte() -> Callable[[Path], None]:
    def flip(path: Path, offset: int = 4096) -> None:
        with path.open("r+b") as handle:
            handle.seek(offset)
            byte = handle.read(1)
            handle.seek(offset)
            handle.write(bytes([byte[0] ^ 0xFF]))
    return flip

