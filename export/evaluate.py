"""Evaluate a bundle on a catalog file against the TF-IDF baseline trained on the bundle's own split.

Contract: `evaluate_bundle` reads the file with the bundle's text template and label spec (both
overridable); when the file is the bundle's training catalog it scores the held-out test split
only (the rows the bundle never trained, tuned or calibrated on), otherwise every usable row.
The baseline is always trained on the bundle's train split of its training catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from export.baseline import TfidfBaseline
from export.catalog import CatalogError, Examples, LabelSpec, load_examples, read_table
from export.false_alarms import simulate_false_alarms
from export.metrics import macro_f1_difference, score
from stream_app.core.bundle import Bundle, sha256_file
from stream_app.core.decoding import decision_matrix
from stream_app.core.drift import DEFAULT_WINDOW
from stream_app.core.pipeline import Pipeline
from stream_app.core.splits import SplitSpec, split_indices


def training_frame(bundle: Bundle) -> tuple[Path, pd.DataFrame]:
    """(path, rows) of the bundle's training catalog, checked unchanged and sampled exactly as at build time."""
    info = bundle.manifest.training
    data = Path(info["data"])
    if not data.is_file():
        raise CatalogError(f"{data}: the bundle's training catalog is gone; the baseline cannot be trained")
    if sha256_file(data) != info["data_sha256"]:
        raise CatalogError(f"{data}: changed since the bundle was built (sha256 differs); its splits no longer hold")
    frame = read_table(data)
    if info.get("sample") and info["sample"] < len(frame):
        frame = frame.sample(n=info["sample"], random_state=info["config"]["seed"]).reset_index(drop=True)
    return data, frame


def training_examples(bundle: Bundle) -> tuple[Examples, dict[str, list[int]]]:
    """The bundle's training catalog, re-read and re-split exactly as at build time."""
    info = bundle.manifest.training
    data, frame = training_frame(bundle)
    examples = load_examples(data, bundle.manifest.text_columns, bundle.manifest.text,
                             LabelSpec.from_dict(info["label_spec"]), info["id_column"], frame=frame)
    return examples, split_indices(examples.ids, SplitSpec(**info["split"]))


def evaluate_bundle(bundle_dir: Path, data: Path, split: str = "auto", text_columns: dict[str, str] | None = None,
                    label_spec: LabelSpec | None = None, id_column: str | None = None, baseline: bool = True,
                    threads: int = 2) -> dict:
    """Scores of the bundle (and the baseline) on `data`. `split`: auto, test or all."""
    bundle = Bundle.load(bundle_dir)
    manifest = bundle.manifest
    info = manifest.training
    same_catalog = sha256_file(Path(data)) == info.get("data_sha256")
    use_test = split == "test" or (split == "auto" and same_catalog)
    if split == "test" and not same_catalog:
        raise CatalogError(f"{data}: --split test needs the bundle's training catalog ({info.get('data')})")

    # The training catalog is read (and hashed) once, for the test rows and the baseline alike.
    reuse_split = use_test and text_columns is None and label_spec is None
    training = training_examples(bundle) if (reuse_split or baseline) else None
    if reuse_split:
        all_examples, sides = training
        examples = all_examples.subset(sides["test"])
    else:
        examples = load_examples(Path(data), text_columns or manifest.text_columns, manifest.text,
                                 label_spec or LabelSpec.from_dict(info["label_spec"]),
                                 id_column if id_column is not None else info.get("id_column"))
        if use_test:
            examples = examples.subset(split_indices(examples.ids, SplitSpec(**info["split"]))["test"])

    scored = score_rows(Pipeline(bundle, threads=threads), examples)
    report, decisions, tops, outliers = scored.report, scored.decisions, scored.tops, scored.outliers
    report.update({
        "data": str(data),
        "split": "test" if use_test else "all",
        "rows_skipped": examples.skipped,
    })
    if use_test and len(outliers) >= DEFAULT_WINDOW:
        # Held-out in-distribution rows, resampled into a 1M-message stream through the default detectors.
        alarms = simulate_false_alarms(outliers, tops, DEFAULT_WINDOW, manifest.drift.expected_outlier_rate,
                                       category_share=manifest.drift.category_share,
                                       category_reference_count=manifest.drift.n_calibration)
        report["drift_false_alarms"] = {"messages": alarms.messages, "windows": alarms.windows,
                                        "embedding_alarms": alarms.embedding_alarms,
                                        "category_alarms": alarms.category_alarms, "per_100k": alarms.per_100k}
    if baseline:
        train_examples, sides = training
        train = train_examples.subset(sides["train"])
        model = TfidfBaseline(manifest.labels).fit(train.texts, train.label_sets)
        baseline_decisions, top = model.decide(examples.texts)
        report["baseline"] = score(manifest.labels, baseline_decisions, top, examples.label_sets)
        report["baseline"]["macro_f1_difference"] = macro_f1_difference(
            manifest.labels, decisions, baseline_decisions, examples.label_sets, groups=examples.ids)
    return report


@dataclass
class ScoredRows:
    """One bundle's outputs on a set of rows: its report and the arrays paired comparisons need."""

    report: dict
    decisions: np.ndarray  # bool [N, C], the thresholded decision in the bundle's label order
    tops: np.ndarray  # int [N], top-1 label index
    outliers: np.ndarray  # bool [N], drift distance > tau


def score_rows(pipeline: Pipeline, examples: Examples) -> ScoredRows:
    """Score a bundle's pipeline on labelled rows: metrics (`score`), outlier rate against its tau."""
    manifest = pipeline.bundle.manifest
    output = pipeline.run(examples.texts)
    probs = output.probabilities
    tops = probs.argmax(1)
    decisions = decision_matrix(probs, manifest.thresholds)
    report = score(manifest.labels, decisions, tops, examples.label_sets)
    distances, _ = pipeline.centroids.search(output.embeddings)
    outliers = distances > manifest.drift.tau
    report.update({
        "bundle_version": manifest.bundle_version,
        "outlier_rate": float(outliers.mean()) if len(distances) else 0.0,
        "expected_outlier_rate": manifest.drift.expected_outlier_rate,
    })
    return ScoredRows(report, decisions, tops, outliers)


__all__ = ["ScoredRows", "evaluate_bundle", "score_rows", "training_examples", "training_frame"]
