"""False alarms of the drift detectors on the test bundle's real held-out distances (issue 11).

tests/core/test_drift_detectors.py checks the false-alarm simulation on synthetic Bernoulli flags,
which cannot see what a real bundle does: tau is a quantile of a few hundred validation distances,
and real products are not Bernoulli draws. Here Elo7 products on the test side of the bundle's split
(by product id: never trained, tuned or calibrated on) go through the bundle's runtime ``Pipeline``,
rendered as the worker renders a message, and their outlier flags and top categories are

1. checked against the calibration: the share of them beyond tau (and beyond every reference
   quantile of the manifest) is what a quantile of ``n_calibration`` distances predicts for ``n``
   new rows, within SIGMAS;
2. resampled by ``export.false_alarms`` (circular block bootstrap, in event-time order) into
   MESSAGES in-distribution messages through the detectors at the worker's default settings: the
   window test must stay under its documented target (``outlier_window``: < 1 false alarm per
   100,000 in-control messages), at the upper end of a 95% interval, and so must the category-mix
   test, whose reference shares are a sample of ``n_calibration`` products too;
3. and, to show that both checks can fail, a shifted stream (English fashion products) and the same
   Elo7 flags with their outliers oversampled to 3 x p0 alarm far more often.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import betabinom, chi2, norm

from export.evaluate import training_examples
from export.false_alarms import FalseAlarmResult, simulate_false_alarms
from stream_app.core.bundle import Bundle
from stream_app.core.drift import critical_count, tail_probability
from stream_app.core.pipeline import Pipeline
from stream_app.core.splits import SplitSpec, side_of
from stream_app.messages import ProductEvent
from stream_app.settings import Settings
from tests.fixtures.bundle import ELO7
from tests.support.worker_harness import elo7_event, fashion_event, fashion_rows

N_HELD_OUT = 800  # of the ~2,700 test-side products of the catalog
N_FASHION = 400
SEED = 11
SIGMAS = 5.0
TAIL = float(norm.sf(SIGMAS))  # one-sided tail probability of SIGMAS: 2.9e-7
MESSAGES = 10_000_000  # in-distribution: 20,000 windows of 500
CONTROL_MESSAGES = 2_000_000
BOUND_PER_100K = 1.0  # outlier_window's docstring: "under the target of < 1 per 100,000"
CONTROL_FACTOR = 10.0  # a shifted stream must alarm at least this many times the bound
# What the worker runs with unless configured otherwise (stream_app/worker/drift.py reads these).
WINDOW = Settings.model_fields["drift_window"].default
ALPHA = Settings.model_fields["drift_alpha"].default
CATEGORY_ALPHA = Settings.model_fields["category_mix_alpha"].default


def held_out_elo7(bundle: Bundle) -> pd.DataFrame:
    """A seeded sample of distinct Elo7 products on the test side of the bundle's split, in event-time order."""
    spec = SplitSpec(**bundle.manifest.training["split"])
    frame = pd.read_parquet(ELO7, columns=["product_id", "title", "concatenated_tags", "creation_date", "category"])
    frame = frame.drop_duplicates("product_id")
    test_side = frame[[side_of(str(p), spec) == "test" for p in frame.product_id]]
    assert len(test_side) >= N_HELD_OUT, f"only {len(test_side)} test-side products in {ELO7}"
    sample = test_side.sample(n=N_HELD_OUT, random_state=SEED)
    # A stream arrives in event time: the block bootstrap then keeps whatever serial correlation it has.
    return sample.sort_values(["creation_date", "product_id"], kind="stable").reset_index(drop=True)


def score(pipeline: Pipeline, events: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance, outlier flag, top label index) per event, through the worker's rendering and the Pipeline."""
    template = pipeline.bundle.manifest.text
    texts = [template.render(ProductEvent.model_validate(e).text_fields()) for e in events]
    predictions = pipeline.predict(texts)
    distances = np.array([p.drift.distance for p in predictions])
    flags = np.array([p.drift.outlier for p in predictions], dtype=bool)
    tops = np.array([p.top_index for p in predictions], dtype=np.int64)
    return distances, flags, tops


def plausible_counts(n: int, n_cal: int, q: float) -> tuple[int, int]:
    """Counts of ``n`` new rows beyond the ``q`` quantile of ``n_cal`` calibration distances, within SIGMAS.

    The threshold is an estimate: np.quantile interpolates between the order statistics j and j + 1
    (1-based) of the calibration distances, and the share of any continuous distribution beyond the
    j-th of n_cal is Beta(n_cal + 1 - j, j). So the count of n new rows beyond it is beta-binomial
    (the binomial of n with the calibration's own sampling error), between the laws of the two order
    statistics. Kept: the counts whose tail probability, under the more lenient of the two, is at
    least the one-sided normal tail of SIGMAS.
    """
    j = min(int(np.floor(q * (n_cal - 1))) + 1, n_cal - 1)
    counts = np.arange(n + 1)
    low_tail = betabinom.cdf(counts, n, n_cal - j, j + 1)  # beyond the (j+1)-th: the smaller share
    high_tail = betabinom.sf(counts - 1, n, n_cal + 1 - j, j)  # beyond the j-th: the larger share
    kept = counts[(low_tail >= TAIL) & (high_tail >= TAIL)]
    return int(kept.min()), int(kept.max())


def per_100k(alarms: int, messages: int) -> float:
    return alarms * 100_000 / messages


def upper_95(alarms: int, messages: int) -> float:
    """Upper end of the two-sided 95% (Garwood) interval of a Poisson rate, per 100,000 messages."""
    return per_100k(float(chi2.ppf(0.975, 2 * alarms + 2) / 2), messages)


def test_false_alarm_rate_on_real_held_out_distances(test_bundle: Path) -> None:
    started = time.perf_counter()
    bundle = Bundle.load(test_bundle)
    drift = bundle.manifest.drift
    p0, n_cal = drift.expected_outlier_rate, drift.n_calibration

    # -- 1. held-out rows the bundle never saw ------------------------------------------------------
    assert Path(bundle.manifest.training["data"]).resolve() == ELO7.resolve()
    rows = held_out_elo7(bundle)
    # The bundle's own rows, re-read and re-split exactly as at build time (the catalog's sha256 checked).
    examples, sides = training_examples(bundle)
    seen = {examples.ids[i] for i in sides["train"] + sides["validation"]}
    assert not seen & {str(p) for p in rows.product_id}, "a held-out product was trained or calibrated on"

    pipeline = Pipeline(bundle, threads=1)
    t0 = time.perf_counter()
    distances, flags, tops = score(pipeline, [elo7_event(r) for r in rows.itertuples(index=False)])
    fashion = fashion_rows(N_FASHION, seed=SEED)
    _, fashion_flags, fashion_tops = score(pipeline, [fashion_event(r) for r in fashion.itertuples(index=False)])
    embed_seconds = time.perf_counter() - t0
    n = len(flags)

    # -- 2. the calibration on them ----------------------------------------------------------------
    # tau bounds the q-quantile from above (export/drift_index.py), so it is at or above the sample one.
    assert drift.tau >= drift.distance_quantiles[f"{drift.quantile:g}"]
    quantiles = {}
    for key, cut in sorted(drift.distance_quantiles.items(), key=lambda kv: float(kv[0])):
        q = float(key)
        count = int((distances > cut).sum())
        lo, hi = plausible_counts(n, n_cal, q)
        quantiles[key] = {"count": count, "rate": count / n, "expected": 1 - q, "plausible": [lo / n, hi / n]}
    beyond_tau = int(flags.sum())
    sample_q = quantiles[f"{drift.quantile:g}"]
    # Beyond tau: at most what lies beyond the sample quantile can plausibly be, and at least none.
    tau_check = {"count": beyond_tau, "rate": beyond_tau / n, "expected": f"<= {1 - drift.quantile:.2%}",
                 "plausible": [0.0, sample_q["plausible"][1]]}
    quantiles["tau"] = tau_check
    naive = SIGMAS * np.sqrt(p0 * (1 - p0) / n)  # the binomial of n alone, as if tau were exact

    # -- 3. false alarms: real flags through the worker's detectors --------------------------------
    def simulate(f: np.ndarray, t: np.ndarray, messages: int, seed: int) -> FalseAlarmResult:
        return simulate_false_alarms(f, t, WINDOW, p0, alpha=ALPHA, n_messages=messages, seed=seed,
                                     category_share=drift.category_share, category_alpha=CATEGORY_ALPHA,
                                     category_reference_count=n_cal)

    t0 = time.perf_counter()
    real = simulate(flags, tops, MESSAGES, seed=1)
    # Control: the same rows with the outliers oversampled until they are 3 x p0 of the stream.
    rng = np.random.default_rng(SEED)
    inliers, outliers = np.flatnonzero(~flags), np.flatnonzero(flags)
    assert len(outliers), f"no held-out row beyond tau of {n}: the oversampled control cannot be built"
    extra = round(3 * p0 * len(inliers) / (1 - 3 * p0))
    hot = rng.permutation(np.concatenate([inliers, np.resize(outliers, extra)]))
    oversampled = simulate(flags[hot], tops[hot], CONTROL_MESSAGES, seed=2)
    shifted = simulate(fashion_flags, fashion_tops, CONTROL_MESSAGES, seed=3)
    simulate_seconds = time.perf_counter() - t0

    c = critical_count(WINDOW, p0, ALPHA)
    figures = {
        "bundle": test_bundle.name, "n_held_out": n, "n_calibration": n_cal, "p0": p0, "tau": drift.tau,
        "held_out_outlier_rate": tau_check["rate"], "plausible_outlier_rate": tau_check["plausible"],
        "naive_binomial_interval": [max(0.0, p0 - naive), p0 + naive], "quantiles": quantiles,
        "window": WINDOW, "alpha": ALPHA, "category_alpha": CATEGORY_ALPHA, "critical_count": c,
        "messages": real.messages, "window_alarms": real.embedding_alarms, "category_alarms": real.category_alarms,
        "window_per_100k": per_100k(real.embedding_alarms, real.messages),
        "window_per_100k_upper95": upper_95(real.embedding_alarms, real.messages),
        "category_per_100k": per_100k(real.category_alarms, real.messages),
        "category_per_100k_upper95": upper_95(real.category_alarms, real.messages),
        "binomial_window_per_100k_at_held_out_rate": tail_probability(c, WINDOW, float(flags.mean())) * 1e5 / WINDOW,
        "oversampled": {"outlier_rate": float(flags[hot].mean()), "messages": oversampled.messages,
                        "window_per_100k": per_100k(oversampled.embedding_alarms, oversampled.messages),
                        "binomial_window_per_100k": tail_probability(c, WINDOW, 3 * p0) * 1e5 / WINDOW},
        "fashion": {"n": len(fashion_flags), "outlier_rate": float(fashion_flags.mean()),
                    "messages": shifted.messages,
                    "window_per_100k": per_100k(shifted.embedding_alarms, shifted.messages),
                    "category_per_100k": per_100k(shifted.category_alarms, shifted.messages)},
        "seconds": {"embed": round(embed_seconds, 1), "simulate": round(simulate_seconds, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }
    print(json.dumps(figures))

    for key, check in quantiles.items():
        lo, hi = check["plausible"]
        assert lo <= check["rate"] <= hi, (
            f"{check['count']} of {n} held-out rows ({check['rate']:.2%}) beyond the calibration's {key} "
            f"(quantile); {check['expected']} expected, {lo:.2%}-{hi:.2%} plausible ({SIGMAS:g} sigma, n = {n}, "
            f"n_calibration = {n_cal})")
    assert figures["window_per_100k_upper95"] < BOUND_PER_100K, (
        f"window test: {real.embedding_alarms} false alarms in {real.messages:,} resampled held-out messages "
        f"({figures['window_per_100k']:.3f} per 100k, 95% upper {figures['window_per_100k_upper95']:.3f}; "
        f"bound {BOUND_PER_100K:g}); held-out outlier rate {tau_check['rate']:.2%} (n = {n}), p0 {p0:.2%}")

    # The category mix, tested against shares counted on n_calibration products (as the worker does).
    assert figures["category_per_100k_upper95"] < BOUND_PER_100K, (
        f"category-mix test: {real.category_alarms} false alarms in {real.messages:,} resampled held-out messages "
        f"({figures['category_per_100k']:.3f} per 100k, 95% upper {figures['category_per_100k_upper95']:.3f}; "
        f"bound {BOUND_PER_100K:g}; reference shares from {n_cal} products)")

    # The checks can fail: a shifted stream breaks both.
    lo, hi = tau_check["plausible"]
    assert not lo <= figures["fashion"]["outlier_rate"] <= hi, (
        f"fashion outlier rate {figures['fashion']['outlier_rate']:.2%} within the plausible {lo:.2%}-{hi:.2%}")
    for name in ("oversampled", "fashion"):
        rate = figures[name]["window_per_100k"]
        assert rate >= CONTROL_FACTOR * BOUND_PER_100K, (
            f"{name} control: the window test alarmed only {rate:.2f} per 100k over {figures[name]['messages']:,} "
            f"messages at outlier rate {figures[name]['outlier_rate']:.2%} (in distribution: "
            f"{figures['window_per_100k']:.3f}; needed >= {CONTROL_FACTOR * BOUND_PER_100K:g})")
    rate = figures["fashion"]["category_per_100k"]
    assert rate >= CONTROL_FACTOR * BOUND_PER_100K, f"fashion control: the category mix alarmed {rate:.2f} per 100k"
