"""`python -m export drift-eval`: how soon the drift detectors notice products of a kind the model never saw.

Semantic drift, measured. A language shift (English products into the Portuguese catalog) is easy:
nearly every such product lies beyond tau. The hard case is a new kind of product in the same
language. So one category is LEFT OUT of training: a quick bundle (the frozen recipe of
``tests/fixtures/bundle.py``: frozen encoder, seed 13, k = 32) is built from the catalog without
it, and the test stream is

* in distribution: the bundle's own held-out test split (rows it never trained, tuned or
  calibrated on), all of the kept categories;
* novel: every product of the left-out category (none of them was seen by training, k-means or
  calibration),

mixed at a given share of novel products. Embeddings are computed ONCE with the bundle's
``Pipeline``; the detectors are then replayed offline on the per-message (distance, outlier, top
category) sequence, many shuffled replays per share (vectorized numpy, exactly the decisions of
``OutlierRateDetector``, ``CategoryMixDetector`` and the two channels of
``SequentialOutlierDetector``; a test checks them against the worker's ``DriftMonitor``).

The bundle and the signals are cached under ``.cache/drift-eval/`` (keyed by the catalog's bytes,
the category, ``--sample`` and ``RECIPE_VERSION``); ``--rebuild`` rebuilds. A full-catalog build
took 34 minutes on this shared 2-core machine under load, the replays of one category ~30 s.

Replays. Each replay is one partition's stream: ``W + U`` in-distribution messages (U uniform in
``[0, W)``, so the onset falls anywhere in a window and the CUSUM starts from its in-control state),
then from the onset on each message is novel with probability ``share`` (rows drawn at random with
replacement from each pool). Reported: messages from the onset to the first alert of each detector
(the alerting message included), median and interquartile range over the replays; replays that
did not alert within ``horizon`` messages count as ``> horizon`` (a median above the horizon is
printed as such).

False alarms: in-distribution test rows resampled with the circular block bootstrap of
``false_alarms`` (blocks of 50 consecutive rows) into ``streams`` streams of ``stream_length``
messages, through every detector; alarms per million messages (a CUSUM restarts after each alarm,
the window tests alert at most once per window; a combined column adds its detectors up, an upper
bound). The goal of issue 10 (``goal_verdict``): at a 5% share, the first alert of any type within
2,000 messages (median) with under one false alarm per million in-distribution messages.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from export.catalog import (
    ELO7_TEXT_COLUMNS,
    CatalogError,
    LabelSpec,
    load_examples,
    read_table,
)
from export.false_alarms import block_bootstrap_indices
from stream_app.catalog import ELO7_LABEL_COLUMN
from stream_app.core.drift.binomial import critical_count
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.cusum import (
    NEAR_QUANTILE,
    CusumChannel,
    cusum_alarm_count,
    cusum_paths_first_alarm,
    default_channels,
    design_cusum,
)
from stream_app.core.drift.outlier_window import DEFAULT_ALPHA, DEFAULT_WINDOW

if TYPE_CHECKING:
    import pandas as pd

    from export.config import ProgressHook

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "drift-eval"
DEFAULT_LEAVE_OUT = ("Bijuterias e Jóias", "Outros")
DEFAULT_SHARES = (0.02, 0.05, 0.10, 0.25)
# The frozen recipe of tests/fixtures/bundle.py (without its --sample: see `--sample`).
RECIPE = {"mode": "frozen", "seed": 13, "k": 32}
# Bump to invalidate the cached leave-out bundles when the recipe's code changes (or pass --rebuild):
# the cache is keyed by the catalog's bytes, the category, the sample and this, not by the source tree,
# which other work changes all the time.
RECIPE_VERSION = 1


# -- data: a bundle without one category, and the per-message signals ----------------------------------


@dataclass
class Signals:
    """Per-message drift inputs of one evaluation: in-distribution test rows and novel products."""

    category: str
    bundle_version: str
    labels: list[str]
    tau: float
    p0: float  # the bundle's calibrated outlier rate, 1 - quantile
    category_share: list[float]
    in_distance: np.ndarray
    in_top: np.ndarray
    new_distance: np.ndarray
    new_top: np.ndarray
    near_cut: float | None = None  # the calibration's NEAR_QUANTILE of distances (the near CUSUM channel)
    in_centroid: np.ndarray | None = None  # nearest centroid per message (reported, not replayed)
    new_centroid: np.ndarray | None = None
    centroid_share: list[float] | None = None
    category_reference_count: int | None = None  # the products category_share was counted on (n_calibration)

    @property
    def in_outlier(self) -> np.ndarray:
        return self.in_distance > self.tau

    @property
    def new_outlier(self) -> np.ndarray:
        return self.new_distance > self.tau


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def split_catalog(
    data: Path, category: str, label_column: str = ELO7_LABEL_COLUMN
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(catalog without ``category``, the rows of ``category``) as data frames."""
    frame = read_table(data)
    if label_column not in frame.columns:
        raise CatalogError(f"{data}: no {label_column!r} column")
    labels = frame[label_column].astype(str)
    if category not in set(labels):
        raise CatalogError(f"{data}: category {category!r} not found; categories are {sorted(set(labels))}")
    kept = frame[labels != category].reset_index(drop=True)
    novel = frame[labels == category].reset_index(drop=True)
    if kept[label_column].nunique() < 2:
        raise CatalogError(f"{data}: leaving out {category!r} leaves fewer than two categories")
    return kept, novel


def leave_out_bundle(data: Path, category: str, sample: int | None, cache: Path = CACHE,
                     rebuild: bool = False, progress: ProgressHook | None = None) -> Path:
    """Build (or reuse from ``cache``) a frozen-recipe bundle trained on ``data`` without ``category``."""
    from export.build import BuildConfig, build
    from export.config import TrainConfig
    from stream_app.core.splits import SplitSpec

    data = Path(data)
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps([data_hash, category, sample, RECIPE, RECIPE_VERSION]).encode()).hexdigest()[:12]
    folder = cache / f"{_slug(category)}-{sample or 'all'}-{key}"
    bundle = folder / "bundle"
    if (bundle / "manifest.json").is_file() and not rebuild:
        return bundle
    folder.mkdir(parents=True, exist_ok=True)
    kept, _ = split_catalog(data, category)
    catalog = folder / "catalog.parquet"
    kept.to_parquet(catalog, index=False)
    config = BuildConfig(
        data=catalog, out=bundle, train=TrainConfig(mode=RECIPE["mode"], seed=RECIPE["seed"]),
        split=SplitSpec(seed=RECIPE["seed"]), sample=sample, k=RECIPE["k"], replace=True,
    )
    build(config, progress)
    return bundle


def compute_signals(bundle_dir: Path, data: Path, category: str, threads: int = 2,
                    cache: bool = True) -> Signals:
    """Distances and top categories of the bundle's test split and of the left-out products (cached beside the
    bundle)."""
    from export.evaluate import training_examples
    from stream_app.core.bundle import Bundle
    from stream_app.core.pipeline import Pipeline

    bundle = Bundle.load(bundle_dir)
    manifest = bundle.manifest
    if category in manifest.labels:
        raise CatalogError(f"bundle {bundle_dir} was trained on {category!r}: it is not a new category for it")
    stored = Path(bundle_dir).parent / f"signals-v2-{manifest.bundle_version[:12]}.npz"
    if cache and stored.is_file():
        arrays = np.load(stored)
    else:
        examples, sides = training_examples(bundle)
        test = examples.subset(sides["test"])
        _, novel_frame = split_catalog(data, category)
        novel = load_examples(Path(data), manifest.text_columns or ELO7_TEXT_COLUMNS, manifest.text,
                              LabelSpec(), manifest.training.get("id_column"), frame=novel_frame)
        pipeline = Pipeline(bundle, threads=threads)
        arrays = {}
        for name, texts in (("in", test.texts), ("new", novel.texts)):
            output = pipeline.run(texts)
            distance, nearest = pipeline.centroids.search(output.embeddings)
            arrays[f"{name}_distance"] = distance
            arrays[f"{name}_centroid"] = nearest
            arrays[f"{name}_top"] = output.probabilities.argmax(1)
        if cache:
            np.savez(stored, **arrays)
    drift = manifest.drift
    return Signals(
        category=category, bundle_version=manifest.bundle_version, labels=list(manifest.labels),
        tau=float(drift.tau), p0=float(drift.expected_outlier_rate), category_share=list(drift.category_share),
        in_distance=np.asarray(arrays["in_distance"]), in_top=np.asarray(arrays["in_top"], dtype=np.int64),
        new_distance=np.asarray(arrays["new_distance"]), new_top=np.asarray(arrays["new_top"], dtype=np.int64),
        near_cut=drift.distance_quantiles.get(f"{NEAR_QUANTILE:g}"),
        in_centroid=np.asarray(arrays["in_centroid"]), new_centroid=np.asarray(arrays["new_centroid"]),
        centroid_share=list(drift.centroid_share), category_reference_count=drift.n_calibration,
    )


# -- the detectors, replayed (vectorized, same decisions as the worker's) --------------------------------


@dataclass(frozen=True)
class DetectorSettings:
    """The detectors replayed: the worker's defaults unless said otherwise."""

    window: int = DEFAULT_WINDOW
    alpha: float = DEFAULT_ALPHA
    category_alpha: float = DEFAULT_CATEGORY_ALPHA
    cusum_shift: float | None = None  # tau channel; None: the defaults of design_cusum
    cusum_guard: float | None = None
    cusum_arl: float | None = None
    near: bool = True  # also the near channel (cusum.NEAR_QUANTILE)

    def channels(self, signals: Signals) -> list[CusumChannel]:
        """The worker's channels (``cusum.default_channels``) for this bundle's calibration."""
        calibration = SimpleNamespace(quantile=1.0 - signals.p0, distance_quantiles=(
            {f"{NEAR_QUANTILE:g}": signals.near_cut} if self.near and signals.near_cut is not None else {}))
        channels = default_channels(calibration)
        overrides = {k: v for k, v in (("shift", self.cusum_shift), ("guard", self.cusum_guard),
                                       ("target_arl", self.cusum_arl)) if v is not None}
        if overrides:
            channels[0] = CusumChannel(design_cusum(signals.p0, **overrides), channels[0].quantile)
        return channels


# The first alert of the worker's detectors; "sequential_tau"/"sequential_near" are the two channels of
# embedding_drift_sequential (its first alert is the earlier of the two).
DETECTORS = ("embedding_drift", "sequential_tau", "sequential_near", "category_mix")
COMBINED = {"embedding_drift_sequential": ("sequential_tau", "sequential_near"),
            "embedding_any": ("embedding_drift", "sequential_tau", "sequential_near"), "any": DETECTORS}


def channel_flags(distance: np.ndarray, outlier: np.ndarray, channel: CusumChannel) -> np.ndarray:
    return outlier if channel.cut is None else distance > channel.cut


def _blocks(values: np.ndarray, window: int) -> np.ndarray:
    """[R, L] -> [R, L // window, window] (L is a multiple of the window)."""
    rows, length = values.shape
    return values.reshape(rows, length // window, window)


def window_crossings(outlier: np.ndarray, window: int, critical: int) -> np.ndarray:
    """[R, B] index of the message at which each aligned window's outlier count reaches ``critical``, or -1."""
    cum = np.cumsum(_blocks(outlier, window), axis=2, dtype=np.int32)
    hit = cum >= critical
    pos = hit.argmax(axis=2)
    starts = np.arange(hit.shape[1]) * window
    return np.where(hit.any(axis=2), starts[None, :] + pos, -1)


def mix_alarms(top: np.ndarray, window: int, share: Sequence[float], alpha: float,
               reference_count: int | None = None) -> np.ndarray:
    """[R, B] bool: the chi-square test of each full aligned window's top-category mix rejects (p <= alpha),
    as `CategoryMixDetector` with ``reference_count`` decides it."""
    detector = CategoryMixDetector(window, share, [str(k) for k in range(len(share))], alpha,
                                   reference_count=reference_count)
    rows, length = top.shape
    windows, labels = length // window, len(share)
    cells = np.arange(rows * windows, dtype=np.int64).repeat(window) * labels + top[:, : windows * window].reshape(-1)
    per_label = np.bincount(cells, minlength=rows * windows * labels).reshape(rows, windows, labels)
    return detector.rejects(per_label)


def first_alerts(distance: np.ndarray, top: np.ndarray, onset: np.ndarray, tau: float, settings: DetectorSettings,
                 channels: Sequence[CusumChannel], category_share: Sequence[float],
                 category_reference_count: int | None = None) -> dict[str, np.ndarray]:
    """Per replay (row of ``distance``/``top``), the index of each detector's first alert at or after
    ``onset``, or -1 (see ``DETECTORS``, ``COMBINED``).

    Rows start at offset 0 (a window start); a message is an outlier when its distance exceeds tau.
    The window test alerts at most once per window, when its count reaches c (a false alarm before
    the onset spends that window); the mix test at a window's last message; each CUSUM channel runs
    from offset 0 and restarts after every alarm.
    """
    w = settings.window
    outlier = distance > tau
    p0 = channels[0].design.p0
    critical = critical_count(w, p0, settings.alpha)
    onset = np.asarray(onset, dtype=np.int64)
    cross = window_crossings(outlier, w, critical)
    cross = np.where(cross >= onset[:, None], cross, -1)
    ends = np.arange(cross.shape[1]) * w + w - 1
    mix = mix_alarms(top, w, category_share, settings.category_alpha, category_reference_count) & (
        ends[None, :] >= onset[:, None])
    out = {
        "embedding_drift": _first(cross),
        "category_mix": np.where(mix.any(axis=1), ends[mix.argmax(axis=1)], -1),
        "sequential_tau": np.full(len(onset), -1, dtype=np.int64),
        "sequential_near": np.full(len(onset), -1, dtype=np.int64),
    }
    for channel in channels:
        name = "sequential_tau" if channel.cut is None else "sequential_near"
        out[name] = cusum_paths_first_alarm(channel_flags(distance, outlier, channel), channel.design.step,
                                            channel.design.threshold, onset)
    for name, parts in COMBINED.items():
        out[name] = _first(np.stack([out[p] for p in parts]).T)
    return out


def _first(indices: np.ndarray) -> np.ndarray:
    """Row-wise smallest non-negative entry of [R, K], or -1."""
    masked = np.where(indices >= 0, indices, np.iinfo(np.int64).max)
    best = masked.min(axis=1)
    return np.where(best == np.iinfo(np.int64).max, -1, best)


def summarize(delays: np.ndarray, horizon: int) -> dict[str, float | int | None]:
    """Median and quartiles of messages to the first alert; replays without one count as > horizon."""
    x = np.where(delays > 0, delays, np.inf).astype(float)
    q25, median, q75 = (float(np.quantile(x, q, method="inverted_cdf")) for q in (0.25, 0.5, 0.75))
    def finite(v: float) -> int | None:
        return None if not np.isfinite(v) else int(v)

    return {"median": finite(median), "q25": finite(q25), "q75": finite(q75),
            "alerted": float(np.isfinite(x).mean()), "horizon": horizon}


def replay_delays(signals: Signals, share: float, settings: DetectorSettings, channels: Sequence[CusumChannel],
                  replays: int, horizon: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Messages from the onset to each detector's first alert (the alerting message counted), 0 if none
    within ``horizon``, for ``replays`` shuffled streams with novel products at ``share`` after the onset."""
    w = settings.window
    length = -(-(2 * w + horizon) // w) * w
    onset = w + rng.integers(0, w, size=replays)
    positions = np.arange(length)[None, :]
    novel = (positions >= onset[:, None]) & (rng.random((replays, length)) < share)
    in_rows = rng.integers(0, len(signals.in_distance), size=(replays, length), dtype=np.int32)
    new_rows = rng.integers(0, len(signals.new_distance), size=(replays, length), dtype=np.int32)
    distance = np.where(novel, signals.new_distance[new_rows], signals.in_distance[in_rows])
    top = np.where(novel, signals.new_top[new_rows], signals.in_top[in_rows])
    first = first_alerts(distance, top, onset, signals.tau, settings, channels, signals.category_share,
                         signals.category_reference_count)
    out = {}
    for name, index in first.items():
        delay = np.where(index >= 0, index - onset + 1, 0)
        out[name] = np.where(delay <= horizon, delay, 0)
    return out


@dataclass
class FalseAlarms:
    messages: int
    alarms: dict[str, int]

    def per_million(self) -> dict[str, float]:
        return {k: v * 1e6 / self.messages for k, v in self.alarms.items()}


def false_alarms(signals: Signals, settings: DetectorSettings, channels: Sequence[CusumChannel], streams: int,
                 stream_length: int, rng: np.random.Generator, block_size: int = 50, chunk: int = 50) -> FalseAlarms:
    """Alarms of each detector over ``streams`` block-bootstrapped in-distribution streams (see module docstring)."""
    w = settings.window
    length = stream_length // w * w
    critical = critical_count(w, signals.p0, settings.alpha)
    distances, tops = signals.in_distance, signals.in_top
    alarms = dict.fromkeys(DETECTORS, 0)
    for first in range(0, streams, chunk):
        rows = min(chunk, streams - first)
        idx = np.stack([block_bootstrap_indices(len(distances), length, block_size, rng) for _ in range(rows)])
        distance, top = distances[idx], tops[idx]
        outlier = distance > signals.tau
        alarms["embedding_drift"] += int((window_crossings(outlier, w, critical) >= 0).sum())
        alarms["category_mix"] += int(mix_alarms(top, w, signals.category_share, settings.category_alpha,
                                                 signals.category_reference_count).sum())
        for channel in channels:
            name = "sequential_tau" if channel.cut is None else "sequential_near"
            alarms[name] += cusum_alarm_count(channel_flags(distance, outlier, channel), channel.design.step,
                                              channel.design.threshold)
    return FalseAlarms(streams * length, alarms)


def evaluate_signals(signals: Signals, shares: Sequence[float], settings: DetectorSettings = DetectorSettings(),
                     replays: int = 200, horizon: int = 50_000, fa_streams: int = 200, fa_length: int = 100_000,
                     seed: int = 0) -> dict:
    """The evaluation of one left-out category (JSON-ready)."""
    rng = np.random.default_rng(seed)
    channels = settings.channels(signals)
    in_rate = float(signals.in_outlier.mean())
    new_rate = float(signals.new_outlier.mean())
    new_tops = np.bincount(signals.new_top, minlength=len(signals.labels)) / max(1, len(signals.new_top))
    rows = []
    for share in shares:
        delays = replay_delays(signals, share, settings, channels, replays, horizon, rng)
        rows.append({
            "share": share,
            "outlier_rate": (1 - share) * in_rate + share * new_rate,
            "messages_to_first_alert": {name: summarize(d, horizon) for name, d in delays.items()},
        })
    fa = false_alarms(signals, settings, channels, fa_streams, fa_length, rng)
    per_million = fa.per_million()
    for name, parts in COMBINED.items():  # an upper bound: alarms of two detectors may coincide
        per_million[name] = sum(per_million[p] for p in parts)
    cusum = []
    for channel in channels:
        flags = channel_flags(signals.in_distance, signals.in_outlier, channel)
        new_flags = channel_flags(signals.new_distance, signals.new_outlier, channel)
        rate = float(flags.mean())
        cusum.append({"channel": "tau" if channel.cut is None else "near", "quantile": channel.quantile,
                      "cut": signals.tau if channel.cut is None else channel.cut, **channel.design.describe(),
                      "in_distribution_rate": rate, "novel_rate": float(new_flags.mean()),
                      "exact_arl_at_in_distribution_rate": channel.design.arl(min(max(rate, 1e-6), 0.999))})
    return {
        "left_out": signals.category,
        "bundle_version": signals.bundle_version,
        "labels": signals.labels,
        "tau": signals.tau,
        "p0": signals.p0,
        "in_distribution": {"rows": len(signals.in_distance), "outlier_rate": in_rate},
        "novel": {"rows": len(signals.new_distance), "outlier_rate": new_rate,
                  "predicted_as": {label: float(s) for label, s in zip(signals.labels, new_tops, strict=True)}},
        "cusum": cusum,
        "window_critical_count": critical_count(settings.window, signals.p0, settings.alpha),
        "shares": rows,
        "false_alarms": {"messages": fa.messages, "alarms": fa.alarms, "per_million": per_million},
    }


GOAL = {"share": 0.05, "messages": 2000, "false_alarms_per_million": 1.0}


def goal_verdict(result: dict) -> dict:
    """Goal of issue 10 item 4: at 5% share the first alert (any type) within 2,000 messages (median),
    with under one false alarm per million in-distribution messages (all types together)."""
    row = next((r for r in result["shares"] if abs(r["share"] - GOAL["share"]) < 1e-9), None)
    median = None if row is None else row["messages_to_first_alert"]["any"]["median"]
    fa = result["false_alarms"]["per_million"]["any"]
    return {**GOAL, "median": median, "false_alarms": fa, "measured": row is not None,
            "met": row is not None and median is not None and median <= GOAL["messages"]
            and fa < GOAL["false_alarms_per_million"]}


def run(data: Path, categories: Sequence[str], shares: Sequence[float], sample: int | None = None,
        settings: DetectorSettings = DetectorSettings(), replays: int = 200, horizon: int = 50_000,
        fa_streams: int = 200, fa_length: int = 100_000, seed: int = 0, bundle: Path | None = None,
        rebuild: bool = False, progress: ProgressHook | None = None) -> dict:
    """The whole evaluation: per left-out category a bundle (built or reused), its signals, the replays."""
    if bundle is not None and len(categories) != 1:
        raise ValueError("--bundle goes with exactly one --leave-out (the category that bundle never saw)")
    results = []
    for category in categories:
        path = bundle or leave_out_bundle(data, category, sample, rebuild=rebuild, progress=progress)
        signals = compute_signals(path, data, category)
        result = evaluate_signals(signals, shares, settings, replays, horizon, fa_streams, fa_length, seed)
        result["bundle"] = str(path)
        result["goal"] = goal_verdict(result)
        results.append(result)
    return {"data": str(data), "sample": sample, "recipe": RECIPE, "seed": seed, "replays": replays,
            "horizon": horizon, "detectors": {"window": settings.window, "alpha": settings.alpha,
                                              "category_alpha": settings.category_alpha},
            "results": results}



# -- the table ---------------------------------------------------------------------------------------------

COLUMNS = (("embedding_drift", "window test (W {w})"), ("sequential_tau", "CUSUM beyond tau"),
           ("sequential_near", "CUSUM beyond q0.9"), ("embedding_any", "first embedding alert"),
           ("category_mix", "category mix (W {w})"), ("any", "first alert, any type"))


def _count(value: int | None, horizon: int) -> str:
    return f"> {horizon:,}" if value is None else f"{value:,}"


def _cell(summary: dict) -> str:
    h = summary["horizon"]
    if summary["median"] is None:
        alerted = summary["alerted"]
        return f"> {h:,} ({'none' if alerted == 0 else f'{alerted:.0%}' if alerted >= 0.01 else '< 1%'} alerted)"
    return f"{summary['median']:,} ({_count(summary['q25'], h)} - {_count(summary['q75'], h)})"


def render_markdown(report: dict) -> str:
    """The evaluation as Markdown: one table per left-out category (what the README shows)."""
    w = report["detectors"]["window"]
    out = []
    for result in report["results"]:
        ind, new = result["in_distribution"], result["novel"]
        fa = result["false_alarms"]
        by_share = sorted(new["predicted_as"].items(), key=lambda kv: -kv[1])
        predicted = ", ".join(f"{k} {v:.0%}" for k, v in by_share if v >= 0.01)
        out += [
            (f"**Left out: {result['left_out']}** ({new['rows']:,} products, {new['outlier_rate']:.1%} beyond tau; "
             f"predicted as {predicted}). In distribution: {ind['rows']:,} held-out test rows, "
             f"{ind['outlier_rate']:.2%} beyond tau (p0 = {result['p0']:.2%}). "
             f"Bundle {result['bundle_version'][:12]}."),
            "",
            (f"Messages from the onset to the first alert, median (interquartile range) over {report['replays']} "
             f"replays, {report['horizon']:,} messages at most:"),
            "",
            "| share of the new category | " + " | ".join(name.format(w=w) for _, name in COLUMNS) + " |",
            "|---" * (len(COLUMNS) + 1) + "|",
        ]
        for row in result["shares"]:
            cells = [_cell(row["messages_to_first_alert"][key]) for key, _ in COLUMNS]
            out.append(f"| {row['share']:.0%} (outlier rate {row['outlier_rate']:.2%}) | " + " | ".join(cells) + " |")
        per_million = fa["per_million"]
        out.append(f"| false alarms per million in-distribution messages ({fa['messages'] / 1e6:,.0f}M resampled) | "
                   + " | ".join(f"{per_million[key]:.2f}" for key, _ in COLUMNS) + " |")
        goal = result["goal"]
        verdict = "met" if goal["met"] else "NOT met"
        out += [
            "",
            *[f"- CUSUM beyond {'tau' if c['channel'] == 'tau' else 'q0.9'} (cut {c['cut']:.3f}, the {c['quantile']:g} "
              f"quantile): p0 = {c['p0']:.2f}, p1 = {c['p1']:.4f} ({c['shift']:g} x p0), h = {c['h']:.2f} "
              f"(r = {c['step']}, H = {c['threshold']}); exact in-control run length {c['arl_at_guard']:,.0f} "
              f"messages at {c['guard']:g} x p0, {c['arl_at_p0']:.3g} at p0, "
              f"{c['exact_arl_at_in_distribution_rate']:.3g} at the held-out rate {c['in_distribution_rate']:.2%}; "
              f"the new category's rate {c['novel_rate']:.1%}." for c in result["cusum"]],
            f"- Window test: c = {result['window_critical_count']} outliers of W = {w}.",
            (f"- Goal ({goal['share']:.0%} share alarmed within {goal['messages']:,} messages, median, with < "
             f"{goal['false_alarms_per_million']:g} false alarm per million): **{verdict}** (median "
             f"{_count(goal['median'], report['horizon'])}, {goal['false_alarms']:.2f} false alarms per million)."),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["DetectorSettings", "Signals", "compute_signals", "evaluate_signals", "first_alerts", "leave_out_bundle",
           "render_markdown", "replay_delays", "run", "summarize"]
