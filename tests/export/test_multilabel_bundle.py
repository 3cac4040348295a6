"""A multi-label bundle from the English fashion catalog's 3-level category paths, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from stream_app.core.bundle import Bundle
from stream_app.core.pipeline import Pipeline
from tests.fixtures.bundle import FASHION_STYLES, FASHION_TEXT
from tests.support.export_cli import run_export

pytestmark = pytest.mark.bundle  # builds its own multi-label bundle (~40 s)
LEVELS = ["masterCategory", "subCategory", "articleType"]


@pytest.fixture(scope="module")
def fashion_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """styles.csv and styles_text.csv are row-aligned: join them by position into one catalog file."""
    styles = pd.read_csv(FASHION_STYLES, dtype=str, keep_default_na=False, na_values=[""])
    text = pd.read_csv(FASHION_TEXT, dtype=str, keep_default_na=False, na_values=[""])
    assert len(styles) == len(text)
    joined = pd.concat([styles, text], axis=1).sample(n=2500, random_state=5)
    path = tmp_path_factory.mktemp("fashion") / "fashion.csv"
    joined.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fashion_bundle(fashion_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fashion-bundle") / "bundle"
    result = run_export("train", "--data", str(fashion_catalog), "--out", str(out), "--mode", "frozen",
                        "--hierarchy", ",".join(LEVELS), "--text-column", "title=productDisplayName",
                        "--template-fields", "title", "--id-column", "id", "--k", "8")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_hierarchy_becomes_path_labels(fashion_bundle: Path) -> None:
    manifest = Bundle.load(fashion_bundle).manifest
    assert manifest.training["label_spec"]["kind"] == "hierarchy"
    assert "Apparel" in manifest.labels and "Apparel/Topwear" in manifest.labels
    assert any(label.count("/") == 2 for label in manifest.labels)


def test_predictions_are_ranked_label_sets(fashion_bundle: Path) -> None:
    pipeline = Pipeline(Bundle.load(fashion_bundle), threads=1)
    predictions = pipeline.predict(["Nike Men Blue Running Shoes", "Peter England Men Navy Blue Shirt",
                                    "Titan Women Silver Watch"])
    multi = [p for p in predictions if sum(c.above_threshold for c in p.categories) >= 2]
    assert multi, "confident fashion products decode to several path labels"
    for prediction in predictions:
        names = [c.name for c in prediction.categories]
        scores = [c.score for c in prediction.categories]
        assert scores == sorted(scores, reverse=True)
        assert len(set(names)) == len(names)
    shoes = {c.name for c in predictions[0].categories if c.above_threshold}
    assert "Footwear" in shoes and "Footwear/Shoes" in shoes


def test_evaluate_multilabel_against_baseline(fashion_bundle: Path, fashion_catalog: Path) -> None:
    result = run_export("evaluate", "--bundle", str(fashion_bundle), "--data", str(fashion_catalog), "--json",
                        timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["split"] == "test"
    assert report["micro_f1"] > 0.7 and report["baseline"]["micro_f1"] > 0.7
