"""`python -m export drift-eval`: replays that make the worker's decisions, and the table's JSON keys.

The real command trains a bundle without one category (minutes); these tests use a cheap stand-in
with the same meaning for the drift signal: the test bundle's encoder is frozen (its embeddings do not
depend on the training labels), so re-fitting the drift index (k-means + tau) on rows WITHOUT one
category gives real distances of a category that index never saw. (Its head still knows the
category, so the stand-in's category-mix figures mean nothing; only the keys are checked.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from export import drift_eval
from export.drift_eval import (
    COMBINED,
    DETECTORS,
    DetectorSettings,
    Signals,
    evaluate_signals,
    first_alerts,
    summarize,
)
from stream_app.core.drift import AlertContext, DriftMonitor, Observation
from tests.fixtures.bundle import ELO7

LEFT_OUT = "Bijuterias e Jóias"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = set(DETECTORS) | set(COMBINED)


@lru_cache(maxsize=2)
def leave_out_distances(bundle_dir: Path, category: str = LEFT_OUT, fit_rows: int = 320, novel_rows: int = 120,
                        quantile: float = 0.75) -> Signals:
    """Signals of the test bundle's frozen encoder with a drift index re-fit without ``category``.

    k-means (k = 8) on ``fit_rows`` kept training rows; in distribution = the kept test rows (~300),
    tau = their ``quantile`` (so p0 = 1 - quantile holds exactly on the pool the streams resample:
    a few hundred validation rows would put it off by +-30%); novel = ``novel_rows`` products of
    ``category``. One Pipeline pass over ~750 rows; cached per process (test_cusum uses it too).
    With this small index the left-out category is farther out in the bulk (the median cut: 50%
    of kept rows, 83% of the category), not in the far tail, hence the 0.75 quantile.
    """
    from export.drift_index import fit_centroids
    from export.evaluate import training_examples
    from stream_app.core.bundle import Bundle
    from stream_app.core.pipeline import Pipeline

    bundle = Bundle.load(bundle_dir)
    examples, sides = training_examples(bundle)
    kept = {side: [i for i in rows if category not in examples.label_sets[i]] for side, rows in sides.items()}
    frame = pd.read_parquet(ELO7)
    novel = frame[frame["category"] == category].sample(n=novel_rows, random_state=3)
    novel_texts = [bundle.manifest.text.render({"title": t, "tags": g})
                   for t, g in zip(novel["title"], novel["concatenated_tags"], strict=True)]
    fit_texts = [examples.texts[i] for i in kept["train"][:fit_rows]]
    test_texts = [examples.texts[i] for i in kept["test"]]
    output = Pipeline(bundle).run(fit_texts + test_texts + novel_texts)
    fit, test, new = np.split(np.arange(len(output.embeddings)), [len(fit_texts), len(fit_texts) + len(test_texts)])
    index = fit_centroids(output.embeddings[fit], 8, seed=13)
    distance, _ = index.search(output.embeddings)
    tops = output.probabilities.argmax(1)
    labels = list(bundle.manifest.labels)
    share = np.bincount(tops[test], minlength=len(labels)) / len(test)
    return Signals(category=category, bundle_version=bundle.version, labels=labels,
                   tau=float(np.quantile(distance[test], quantile)), p0=1.0 - quantile, category_share=list(share),
                   in_distance=distance[test], in_top=tops[test], new_distance=distance[new], new_top=tops[new])


def synthetic(seed: int = 1) -> Signals:
    rng = np.random.default_rng(seed)
    share = [0.2, 0.05, 0.2, 0.45, 0.05, 0.05]
    return Signals("X", "v", list("abcdef"), 0.5, 0.01, share,
                   rng.random(3000) * 0.505, rng.choice(6, 3000, p=share),
                   np.where(rng.random(500) < 0.3, 0.6, 0.3 + 0.2 * rng.random(500)),
                   rng.choice(6, 500, p=[0.1, 0, 0.3, 0.3, 0.3, 0]), near_cut=0.4545, category_reference_count=3000)


def test_replayed_first_alerts_are_the_monitors() -> None:
    """The vectorized replay decides exactly as the worker's DriftMonitor on the same streams."""
    signals, settings = synthetic(), DetectorSettings()
    channels = settings.channels(signals)
    assert [c.cut for c in channels] == [None, 0.4545]
    rng = np.random.default_rng(2)
    rows, length = 6, 6000
    onset = 500 + rng.integers(0, 500, size=rows)
    shares = np.array([0.05, 0.05, 0.1, 0.1, 0.25, 0.25])
    novel = (np.arange(length)[None, :] >= onset[:, None]) & (rng.random((rows, length)) < shares[:, None])
    pick_in = rng.integers(0, len(signals.in_distance), size=(rows, length))
    pick_new = rng.integers(0, len(signals.new_distance), size=(rows, length))
    distance = np.where(novel, signals.new_distance[pick_new], signals.in_distance[pick_in])
    top = np.where(novel, signals.new_top[pick_new], signals.in_top[pick_in])
    replayed = first_alerts(distance, top, onset, signals.tau, settings, channels, signals.category_share,
                            signals.category_reference_count)
    calibration = SimpleNamespace(tau=signals.tau, quantile=1 - signals.p0, centroid_share=[],
                                  category_share=signals.category_share, distance_quantiles={"0.9": 0.4545},
                                  n_calibration=signals.category_reference_count)
    for r in range(rows):
        monitor = DriftMonitor.from_calibration(calibration, signals.labels, AlertContext(), window=settings.window,
                                                sequential=True)
        first: dict[str, int] = {}
        for offset in range(length):
            d = float(distance[r, offset])
            obs = Observation(f"p{offset}", d, 0, d > signals.tau, int(top[r, offset]), 0, offset, None, T0)
            for record in monitor.update(obs):
                if record.status == "firing" and offset >= onset[r]:
                    first.setdefault(record.type, offset)
        assert first.get("embedding_drift", -1) == replayed["embedding_drift"][r]
        assert first.get("category_mix", -1) == replayed["category_mix"][r]
        embedding = min(first.get(t, length) for t in ("embedding_drift", "embedding_drift_sequential"))
        assert embedding == replayed["embedding_any"][r]
        if replayed["embedding_drift_sequential"][r] < first.get("embedding_drift", length):
            assert first["embedding_drift_sequential"] == replayed["embedding_drift_sequential"][r]


def test_summary_counts_replays_without_an_alert_as_beyond_the_horizon() -> None:
    assert summarize(np.array([10, 20, 30, 40]), 100) == {"median": 20, "q25": 10, "q75": 30, "alerted": 1.0,
                                                         "horizon": 100}
    censored = summarize(np.array([10, 0, 0, 0]), 100)
    assert censored["median"] is None and censored["q75"] is None and censored["q25"] == 10
    assert censored["alerted"] == 0.25


def test_evaluation_of_real_left_out_distances_has_the_tables_keys(test_bundle: Path) -> None:
    signals = leave_out_distances(test_bundle)
    assert signals.new_outlier.mean() > 1.5 * signals.in_outlier.mean()  # the left-out category lies farther out
    # The stand-in's cut is the 0.75 quantile (p0 = 0.25): tune the tau channel to 1.5 x p0 as test_cusum does.
    settings = DetectorSettings(cusum_shift=1.5, cusum_guard=1.1)
    result = evaluate_signals(signals, [0.05, 0.5], settings, replays=20, horizon=3000, fa_streams=4, fa_length=20_000)
    assert {"left_out", "p0", "tau", "in_distribution", "novel", "cusum", "shares", "false_alarms"} <= set(result)
    assert [row["share"] for row in result["shares"]] == [0.05, 0.5]
    for row in result["shares"]:
        assert set(row["messages_to_first_alert"]) == KEYS
        for summary in row["messages_to_first_alert"].values():
            assert set(summary) == {"median", "q25", "q75", "alerted", "horizon"}
    assert set(result["false_alarms"]["per_million"]) == KEYS
    assert result["false_alarms"]["messages"] == 4 * 20_000
    assert result["shares"][1]["messages_to_first_alert"]["sequential_tau"]["median"] is not None  # 50%: alarmed


def test_cli_prints_the_json_and_the_table(test_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export.cli import app

    # The bundle build is the slow part: stand in the cheap leave-out signals for it.
    monkeypatch.setattr(drift_eval, "compute_signals", lambda bundle, data, category: leave_out_distances(test_bundle))
    args = ["drift-eval", "--bundle", str(test_bundle), "--leave-out", LEFT_OUT, "--shares", "0.05,0.25",
            "--replays", "10", "--horizon", "2000", "--fa-streams", "2", "--fa-length", "10000"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"data", "sample", "recipe", "replays", "horizon", "detectors", "results"} <= set(report)
    [one] = report["results"]
    assert one["left_out"] == LEFT_OUT and one["bundle"] == str(test_bundle)
    assert set(one["goal"]) >= {"share", "messages", "median", "false_alarms", "met"}
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "| share of the new category | window test (W 500) | CUSUM beyond tau | CUSUM beyond q0.9 |" in table.stdout
    assert "false alarms per million" in table.stdout and "Goal (5% share" in table.stdout
    bad = CliRunner().invoke(app, ["drift-eval", "--shares", "0,2"])
    assert bad.exit_code != 0
