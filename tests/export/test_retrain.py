"""`python -m export retrain`: the parent's recipe plus new labelled rows (a new category among them),
warm-started from the parent's checkpoint, gives a loadable candidate that records its lineage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from export.compare import compare_bundles
from stream_app.core.bundle import Bundle, sha256_file
from stream_app.core.store import BundleStore
from tests.fixtures.bundle import ELO7, FASHION_STYLES, FASHION_TEXT
from tests.support.export_cli import run_export

pytestmark = pytest.mark.slow


def new_rows(elo7_rows: int, fashion_rows: int, seed: int) -> pd.DataFrame:
    """Elo7 rows plus English fashion products labelled with a category the parent does not know."""
    columns = ["product_id", "title", "concatenated_tags", "category"]
    elo7 = pd.read_parquet(ELO7).sample(n=elo7_rows, random_state=seed)[columns]
    styles, text = pd.read_csv(FASHION_STYLES), pd.read_csv(FASHION_TEXT)
    fashion = pd.DataFrame({"product_id": "fashion-" + styles["id"].astype(str), "title": text["productDisplayName"],
                            "concatenated_tags": styles["articleType"].str.lower(), "category": "Moda"})
    return pd.concat([elo7, fashion.sample(n=fashion_rows, random_state=seed)], ignore_index=True)


@pytest.fixture(scope="module")
def candidate(test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(candidate bundle, its new-data file): one small frozen retrain through the real CLI."""
    root = tmp_path_factory.mktemp("retrain")
    data = root / "new.csv"
    new_rows(100, 200, seed=11).to_csv(data, index=False)
    out = root / "candidate"
    result = run_export("retrain", "--from", str(test_bundle), "--data", str(data), "--out", str(out),
                        "--sample", "400")
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return out, data


def test_candidate_loads_and_records_its_parent_and_recipe(test_bundle: Path, candidate: tuple[Path, Path]) -> None:
    out, data = candidate
    parent, child = Bundle.load(test_bundle).manifest, Bundle.load(out).manifest
    training = child.training
    assert training["parent"]["bundle_version"] == parent.bundle_version
    assert child.bundle_version != parent.bundle_version
    # the recipe came from the parent's manifest
    assert child.text == parent.text and child.text_columns == parent.text_columns
    assert child.base_encoder == parent.base_encoder and child.max_tokens == parent.max_tokens
    assert training["config"] == parent.training["config"] and training["split"] == parent.training["split"]
    assert training["label_spec"] == parent.training["label_spec"] and training["sample"] == 400
    # new category added; the head rows of the known ones came from the parent's checkpoint
    assert child.labels == sorted([*parent.labels, "Moda"])
    warm = training["result"]["warm_start"]
    assert (warm["labels_loaded"], warm["labels_new"]) == (len(parent.labels), 1)
    # the union catalog is what the manifest points at, so evaluate/compare can re-split it
    union = Path(training["data"])
    assert union == out.with_name(out.name + "-catalog.parquet") and sha256_file(union) == training["data_sha256"]
    roles = {source["role"]: source for source in training["sources"]}
    assert roles["new data"]["rows"] == 300 and roles["new data"]["sha256"] == sha256_file(data)
    assert roles["parent training catalog"]["rows"] == parent.training["sample"]


def test_candidate_is_compared_and_promoted(test_bundle: Path, candidate: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = candidate
    held_out = tmp_path / "mix.csv"
    new_rows(600, 150, seed=23).to_csv(held_out, index=False)
    report = compare_bundles(test_bundle, out, held_out, resamples=50, speed_rounds=0)
    assert report["b"]["parent_version"] == report["a"]["bundle_version"]
    assert report["unknown_labels"] == ["Moda"]  # A cannot predict it: its rows count as misses for A
    assert report["per_category"]["Moda"]["a_f1"] == 0 and report["per_category"]["Moda"]["b_f1"] > 0.5
    assert report["verdict"] in ("promote", "keep")

    store = BundleStore(tmp_path / "store")
    store.promote(store.add(test_bundle))
    store.promote(store.add(out))
    assert store.read_pointer().previous == [report["a"]["bundle_version"]]
    assert store.rollback().version == report["a"]["bundle_version"]
