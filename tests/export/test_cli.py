"""The export CLI: bad input gets an error naming what is wrong, and nothing half-written is left."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures.bundle import ELO7
from tests.support.export_cli import assert_fails_naming, invoke_export, run_export


def small_catalog(tmp_path: Path, **columns) -> Path:
    path = tmp_path / "catalog.csv"
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "args_of, needles",
    [
        (lambda p: ["--label-column", "categry"], ["'categry' not found", "category"]),
        (lambda p: ["--text-column", "title=titel"], ["'titel' not found"]),
        (lambda p: ["--encoder", str(p / "no-such-encoder")], ["no-such-encoder", "does not exist"]),
        (lambda p: ["--mode", "deep"], ["'deep'"]),
        (lambda p: ["--text-column", "title"], ["FIELD=COLUMN"]),
    ],
)
def test_bad_options_are_named_and_write_nothing(tmp_path: Path, args_of, needles) -> None:
    out = tmp_path / "bundle"
    result = invoke_export("train", "--data", str(ELO7), "--out", str(out), "--mode", "frozen", "--sample", "200",
                           *args_of(tmp_path))
    assert_fails_naming(result, *needles)
    assert not out.exists() and not any(p.name.startswith(".bundle") for p in tmp_path.iterdir())


def test_empty_file_single_category_and_no_labels(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_fails_naming(invoke_export("train", "--data", str(empty), "--out", str(tmp_path / "b"), "--mode", "frozen"),
                        "empty.csv", "empty")
    title_only = ("--text-column", "title=title", "--template-fields", "title")
    one = small_catalog(tmp_path, product_id=range(30), title=[f"t{i}" for i in range(30)], category=["x"] * 30)
    assert_fails_naming(invoke_export("train", "--data", str(one), "--out", str(tmp_path / "b"), "--mode", "frozen",
                                      *title_only), "1 distinct label")
    none = small_catalog(tmp_path, product_id=range(3), title=["a", "b", "c"], category=[None] * 3)
    assert_fails_naming(invoke_export("train", "--data", str(none), "--out", str(tmp_path / "b"), "--mode", "frozen",
                                      *title_only), "no usable rows", "category")
    assert not (tmp_path / "b").exists()


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_fails_naming(invoke_export("train", "--data", str(ELO7), "--out", str(out), "--mode", "frozen"),
                        "already exists", "--replace")
    assert (out / "keep.txt").read_text() == "mine"


def test_help_explains_every_option() -> None:
    result = run_export("train", "--help")
    assert result.returncode == 0
    for option in ("--data", "--out", "--mode", "--encoder", "--text-column", "--labels-column", "--hierarchy",
                   "--sample", "--k", "--quantile", "--replace"):
        assert option in result.stdout


def test_evaluate_json_on_the_test_split(test_bundle: Path) -> None:
    result = run_export("evaluate", "--bundle", str(test_bundle), "--data", str(ELO7), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["rows"] > 100
    for key in ("accuracy", "macro_f1", "micro_f1", "per_category", "baseline"):
        assert key in report
    assert {"accuracy", "macro_f1"} <= set(report["baseline"])
    assert report["accuracy"] > 0.6 and report["baseline"]["accuracy"] > 0.6  # far above the 46% majority class
    manifest = json.loads((test_bundle / "manifest.json").read_text())
    assert report["accuracy"] == pytest.approx(manifest["metrics"]["test"]["accuracy"], abs=1e-9)
    diff = report["baseline"]["macro_f1_difference"]
    assert diff["model_minus_baseline"] == pytest.approx(report["macro_f1"] - report["baseline"]["macro_f1"])
    assert diff["ci95"][0] <= diff["model_minus_baseline"] <= diff["ci95"][1] and diff["grouped_by"] == "group"


def test_evaluate_data_with_an_unknown_label(test_bundle: Path, tmp_path: Path) -> None:
    rows = pd.read_parquet(ELO7).head(40).copy()
    rows.loc[rows.index[:5], "category"] = "Categoria Nova"
    data = tmp_path / "with-unknown.parquet"
    rows.to_parquet(data)
    result = run_export("evaluate", "--bundle", str(test_bundle), "--data", str(data), "--json", "--no-baseline")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["split"] == "all" and report["rows"] == 40
    assert report["unknown_labels"] == ["Categoria Nova"] and report["rows_with_unknown_label"] == 5
    assert report["per_category"]["Categoria Nova"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 5}
    assert report["accuracy"] <= 35 / 40  # the five unknown rows are misses
