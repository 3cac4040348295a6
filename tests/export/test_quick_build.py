"""The quick (frozen) build embeds the training rows once, with the bundle's own INT8 encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from export.drift_index import sample_rows
from tests.fixtures.bundle import ELO7, checkpoint_of


def test_sample_rows_is_seeded_sorted_and_bounded() -> None:
    rows = sample_rows(27_000, 8192, seed=13)
    assert len(rows) == 8192 and len(set(rows.tolist())) == 8192
    assert np.all(np.diff(rows) > 0) and rows[-1] < 27_000
    assert np.array_equal(rows, sample_rows(27_000, 8192, seed=13))
    assert not np.array_equal(rows, sample_rows(27_000, 8192, seed=14))
    assert np.array_equal(sample_rows(500, 8192, seed=13), np.arange(500))
    assert np.array_equal(sample_rows(500, None, seed=13), np.arange(500))


def test_build_result_annotations_resolve() -> None:
    """`BuildResult.manifest` is annotated with the bundle's `Manifest`, which build.py once never imported."""
    from typing import get_type_hints

    from export.build import BuildResult
    from stream_app.core.bundle import Manifest

    assert get_type_hints(BuildResult)["manifest"] is Manifest


def test_the_head_and_the_centroids_learn_from_the_bundle_graphs_own_embeddings(test_bundle: Path) -> None:
    """The frozen head trains on `int8_pooled_embeddings` and k-means fits them L2-normalized: on the
    same batches they are exactly what the shipped graph outputs as `embedding`."""
    from export.build import load_checkpoint
    from export.onnx_export import int8_pooled_embeddings
    from stream_app.core.bundle import Bundle
    from stream_app.core.model import OnnxCategorizer

    bundle = Bundle.load(test_bundle)
    training = bundle.manifest.training
    assert training["result"]["head_rows"] == min(training["split_sizes"]["train"], training["config"]["frozen_rows"])
    assert bundle.manifest.drift.n_fit == training["result"]["head_rows"]
    assert training["seconds"]["train"] > 0

    model, _ = load_checkpoint(checkpoint_of(test_bundle), bundle.manifest.labels, bundle.manifest.max_tokens)
    categorizer = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens)
    titles = pd.read_parquet(ELO7, columns=["title"])["title"].head(80).tolist()
    ids = categorizer.encode(titles)
    pooled = int8_pooled_embeddings(model, ids, categorizer.pad_id).numpy()
    normalized = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    assert np.abs(normalized - categorizer.run_ids(ids).embeddings).max() < 1e-5
