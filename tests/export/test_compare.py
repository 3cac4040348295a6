"""`python -m export compare`: the JSON contract, a bundle against itself, and the verdict rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.compare import MARGIN, decide
from tests.support.export_cli import run_export


@pytest.fixture(scope="module")
def self_comparison(test_bundle: Path, small_catalog: Path) -> dict:
    """The test bundle against itself, through the real CLI."""
    result = run_export("compare", str(test_bundle), str(test_bundle), "--data", str(small_catalog), "--json",
                        "--resamples", "200", "--speed-rounds", "1", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_json_has_the_documented_keys(self_comparison: dict) -> None:
    report = self_comparison
    assert {"a", "b", "macro_f1_difference", "verdict"} <= set(report)
    for side in ("a", "b"):
        keys = {"accuracy", "macro_f1", "bundle_version", "drift", "size_bytes", "texts_per_second"}
        assert keys <= set(report[side])
        # The frozen test bundle scores ~0.85 accuracy on Elo7's test split; a broken scorer is near chance (~0.2).
        assert 0.6 <= report[side]["accuracy"] <= 1 and 0.4 <= report[side]["macro_f1"] <= 1
        assert {"tau", "expected_outlier_rate", "outlier_rate", "stale"} <= set(report[side]["drift"])
        assert report[side]["texts_per_second"] > 0 and report[side]["size_bytes"] > 0
    assert len(report["macro_f1_difference"]["ci95"]) == 2
    assert report["verdict"] in ("promote", "keep") and report["rule"] and report["reason"]
    assert report["split"] == "test" and 50 < report["rows"] < 250  # ~10% of 1,200 rows, by product id
    assert set(report["per_category"]) >= {"Bebê", "Lembrancinhas"}


def test_a_bundle_against_itself_is_a_tie_and_kept(self_comparison: dict) -> None:
    report = self_comparison
    assert report["a"]["bundle_version"] == report["b"]["bundle_version"]
    assert report["a"]["macro_f1"] == report["b"]["macro_f1"] and report["a"]["accuracy"] == report["b"]["accuracy"]
    difference = report["macro_f1_difference"]
    assert difference["difference"] == 0 and difference["ci95"] == [0, 0]
    assert report["verdict"] == "keep"
    assert all(m["a_f1"] == m["b_f1"] for m in report["per_category"].values())


def drift(stale: bool) -> dict:
    return {"stale": stale, "outlier_rate": 0.05 if stale else 0.01, "expected_outlier_rate": 0.01}


@pytest.mark.parametrize("point, ci, a_stale, b_stale, verdict", [
    (0.02, [0.001, 0.04], False, False, "promote"),              # better, firmly
    (0.01, [-MARGIN / 2, 0.02], False, False, "promote"),       # better, not plausibly worse by more than the margin
    (0.01, [-0.03, 0.05], False, False, "keep"),                # better on average, but may be clearly worse
    (0.0, [0.0, 0.0], False, False, "keep"),                     # a tie
    (-0.001, [-MARGIN / 2, 0.002], True, False, "promote"),     # not worse, and A's calibration is stale
    (-0.001, [-MARGIN / 2, 0.002], True, True, "keep"),         # both stale: no reason to switch
    (-0.02, [-0.04, -0.001], True, False, "keep"),               # stale A, but B is worse
])
def test_verdict_rule(point: float, ci: list[float], a_stale: bool, b_stale: bool, verdict: str) -> None:
    got, reason = decide({"difference": point, "ci95": ci}, drift(a_stale), drift(b_stale))
    assert got == verdict, reason
