"""Two bundles side by side on the same rows, and whether B should replace A.

Contract: `compare_bundles(a, b, data)` scores both bundles on the same labelled rows of `data`
(by default its test split: the rows whose product id is on the test side of both bundles' splits,
which neither bundle trained, tuned or calibrated on), with evaluate's and metrics' own functions
(`score_rows`, `macro_f1_difference`), and returns one JSON-ready dict:

- ``a`` / ``b``: version, path, accuracy, macro-F1, micro-F1, drift calibration (tau, expected and
  observed outlier rate, whether the calibration is stale on these rows), bundle size, texts/s;
- ``macro_f1_difference``: B minus A, paired bootstrap 95% interval (``ci95``) over products;
- ``accuracy_difference``, ``per_category`` (F1 of A and B, support);
- ``verdict`` (``promote`` or ``keep``), ``rule`` (the rule applied, in words) and ``reason``.

The rule (`RULE`): promote B when its macro-F1 is higher (difference > 0) and the lower bound of
the 95% interval is above -MARGIN (0.005), i.e. B is better on these rows and not plausibly worse by
more than half a point; or when B is not worse (lower bound above -MARGIN) and A's drift calibration
is stale on these rows while B's is not (A flags far more outliers than its tau promises: the data
moved away from what A was calibrated on). Otherwise keep A. Comparing a bundle with itself gives
difference 0 and `keep`.

"Stale": the number of rows beyond tau is improbably high for the calibrated rate p0 = 1 - q: the
binomial upper tail P(X >= observed | n, p0) is below `STALE_P` (1e-3).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy.stats import binom

from export.catalog import CatalogError, Examples, LabelSpec, load_examples, read_table
from export.evaluate import ScoredRows, score_rows
from export.metrics import macro_f1_difference
from stream_app.core.bundle import MANIFEST, Bundle
from stream_app.core.pipeline import Pipeline
from stream_app.core.splits import SplitSpec, side_of

MARGIN = 0.005
STALE_P = 1e-3
RULE = (f"promote B when macro-F1(B) - macro-F1(A) > 0 and the lower bound of its 95% paired-bootstrap interval "
        f"is > -{MARGIN}; or when that lower bound is > -{MARGIN} and A's drift calibration is stale on these rows "
        f"(P(outliers >= observed | tau's rate) < {STALE_P:g}) while B's is not; otherwise keep A")


def bundle_size(bundle: Bundle) -> int:
    """Bytes of the manifest and every file it lists."""
    return (bundle.path / MANIFEST).stat().st_size + sum((bundle.path / name).stat().st_size
                                                          for name in bundle.manifest.files)


def drift_calibration(bundle: Bundle, outliers: np.ndarray) -> dict:
    """tau and the observed outlier rate on these rows against the calibrated one."""
    drift = bundle.manifest.drift
    n, count = len(outliers), int(np.sum(outliers))
    p0 = drift.expected_outlier_rate
    tail = float(binom.sf(count - 1, n, p0)) if n else 1.0  # P(X >= count)
    return {"tau": drift.tau, "quantile": drift.quantile, "k": drift.k, "expected_outlier_rate": p0,
            "outlier_rate": count / n if n else 0.0, "outliers": count, "rows": n,
            "p_value_too_many_outliers": tail, "stale": bool(n and tail < STALE_P)}


def comparison_rows(a: Bundle, b: Bundle, data: Path, split: str, text_columns: dict[str, str] | None,
                    label_spec: LabelSpec | None, id_column: str | None) -> tuple[Examples, Examples]:
    """The same rows of `data`, rendered with each bundle's own text template and column mapping.

    Labels and product ids are read with A's label spec and id column unless overridden. With
    split="test", a row is kept when its product id is on the test side of both bundles' splits."""
    frame = read_table(Path(data))
    info = a.manifest.training
    spec = label_spec or LabelSpec.from_dict(info["label_spec"])
    ids = id_column if id_column is not None else info.get("id_column")
    per_bundle = [load_examples(Path(data), text_columns or m.text_columns, m.text, spec, ids, frame=frame)
                  for m in (a.manifest, b.manifest)]
    common = set(per_bundle[0].row_numbers) & set(per_bundle[1].row_numbers)
    if split == "test":
        specs = {SplitSpec(**bundle.manifest.training["split"]) for bundle in (a, b)}
        first = per_bundle[0]
        test_rows = {row for row, group in zip(first.row_numbers, first.ids, strict=True)
                     if all(side_of(group, s) == "test" for s in specs)}
        common &= test_rows
    if not common:
        raise CatalogError(f"{data}: no usable rows to compare on ({split} split"
                           + (", by the bundles' product-id split" if split == "test" else "") + ")")
    out = []
    for examples in per_bundle:
        keep = [i for i, row in enumerate(examples.row_numbers) if row in common]
        out.append(examples.subset(keep))
    return out[0], out[1]


def _aligned_decisions(scored: ScoredRows, labels: list[str], union: list[str]) -> np.ndarray:
    """A bundle's decision matrix with columns in the `union` label order (zeros where it lacks a label)."""
    out = np.zeros((scored.decisions.shape[0], len(union)), dtype=bool)
    position = {label: i for i, label in enumerate(union)}
    for j, label in enumerate(labels):
        out[:, position[label]] = scored.decisions[:, j]
    return out


def measure_speed(pipelines: list[Pipeline], texts: list[list[str]], rounds: int) -> list[float | None]:
    """texts/s of each pipeline on its texts, in the same process, rounds alternating the order (ABBA...)."""
    if rounds <= 0 or not texts[0]:
        return [None for _ in pipelines]
    seconds = [0.0 for _ in pipelines]
    for r in range(rounds):
        order = range(len(pipelines)) if r % 2 == 0 else reversed(range(len(pipelines)))
        for i in order:
            started = time.perf_counter()
            pipelines[i].run(texts[i])
            seconds[i] += time.perf_counter() - started
    return [rounds * len(t) / s if s > 0 else None for t, s in zip(texts, seconds, strict=True)]


def decide(difference: dict, drift_a: dict, drift_b: dict) -> tuple[str, str]:
    """(verdict, reason) under RULE."""
    point, ci = difference["difference"], difference["ci95"]
    low = ci[0] if ci else None
    if low is None:
        return "keep", "no bootstrap interval (no rows)"
    span = f"{point:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"
    if point > 0 and low > -MARGIN:
        return "promote", f"B's macro-F1 is higher, {span}, lower bound above -{MARGIN}"
    if low > -MARGIN and drift_a["stale"] and not drift_b["stale"]:
        return "promote", (f"B is not worse ({span}) and A's drift calibration is stale on these rows "
                           f"(outlier rate {drift_a['outlier_rate']:.4f} vs {drift_a['expected_outlier_rate']:.4f} "
                           "expected)")
    if point <= 0 and low > -MARGIN:
        return "keep", f"B is not better: {span}, and A's drift calibration still holds"
    return "keep", f"B may be worse: {span}, lower bound at or below -{MARGIN}"


def compare_bundles(a_dir: Path, b_dir: Path, data: Path, split: str = "test",
                    text_columns: dict[str, str] | None = None, label_spec: LabelSpec | None = None,
                    id_column: str | None = None, resamples: int = 1000, speed_rounds: int = 3, threads: int = 2,
                    seed: int = 0) -> dict:
    """See the module docstring. `split`: test (by product id, default) or all (a file neither bundle saw)."""
    if split not in ("test", "all"):
        raise ValueError(f"split {split!r}: use test or all")
    bundles = [Bundle.load(a_dir), Bundle.load(b_dir)]
    rows = comparison_rows(bundles[0], bundles[1], Path(data), split, text_columns, label_spec, id_column)
    same = bundles[0].version == bundles[1].version and rows[0].texts == rows[1].texts
    if same:  # one model: load and score it once (the comparison is then a tie by construction)
        pipeline = Pipeline(bundles[0], threads=threads)
        pipelines = [pipeline, pipeline]
        scored = [score_rows(pipeline, rows[0])] * 2
    else:
        pipelines = [Pipeline(bundle, threads=threads) for bundle in bundles]
        scored = [score_rows(pipeline, examples)  # also the warm-up
                  for pipeline, examples in zip(pipelines, rows, strict=True)]
    speeds = measure_speed(pipelines, [examples.texts for examples in rows], speed_rounds)

    label_sets = rows[0].label_sets
    labels = [list(bundle.manifest.labels) for bundle in bundles]
    union = labels[0] + [label for label in labels[1] if label not in labels[0]]
    decisions = [_aligned_decisions(s, bundle_labels, union)
                 for s, bundle_labels in zip(scored, labels, strict=True)]
    bootstrap = macro_f1_difference(union, decisions[1], decisions[0], label_sets, groups=rows[0].ids,
                                    resamples=resamples, seed=seed)
    difference = {
        "difference": bootstrap["model_minus_baseline"],
        "b_minus_a": bootstrap["model_minus_baseline"],
        "ci95": bootstrap["ci95"],
        "share_b_not_better": bootstrap["share_not_better"],
        "resamples": bootstrap["resamples"],
        "grouped_by": "product id" if bootstrap["grouped_by"] == "group" else "row",
    }
    sides = []
    for bundle, s, speed in zip(bundles, scored, speeds, strict=True):
        r = s.report
        sides.append({
            "path": str(bundle.path), "bundle_version": bundle.version,
            "created_at": bundle.manifest.created_at.isoformat(),
            "parent_version": (bundle.manifest.training.get("parent") or {}).get("bundle_version"),
            "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "micro_f1": r["micro_f1"],
            "labels": list(bundle.manifest.labels),
            "drift": drift_calibration(bundle, s.outliers),
            "size_bytes": bundle_size(bundle), "model_bytes": bundle.model_path.stat().st_size,
            "texts_per_second": speed,
        })
    per_category = {}
    for label in dict.fromkeys([*scored[0].report["per_category"], *scored[1].report["per_category"]]):
        a_m, b_m = (s.report["per_category"].get(label) for s in scored)
        per_category[label] = {"a_f1": None if a_m is None else a_m["f1"], "b_f1": None if b_m is None else b_m["f1"],
                               "support": (a_m or b_m)["support"]}
    verdict, reason = decide(difference, sides[0]["drift"], sides[1]["drift"])
    return {
        "a": sides[0], "b": sides[1],
        "data": str(data), "split": split, "rows": len(label_sets),
        "macro_f1_difference": difference,
        "accuracy_difference": sides[1]["accuracy"] - sides[0]["accuracy"],
        "per_category": per_category,
        "unknown_labels": sorted({label for s in scored for label in s.report["unknown_labels"]}),
        "speed_rounds": speed_rounds if rows[0].texts else 0,
        "verdict": verdict, "rule": RULE, "reason": reason,
    }


__all__ = ["MARGIN", "RULE", "STALE_P", "compare_bundles", "decide"]
