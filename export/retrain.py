"""`python -m export retrain`: a candidate bundle from the serving bundle's recipe plus new labelled data.

Contract: `retrain(parent, data_files, out)` reads the recipe from the parent's manifest (encoder,
text template and column mapping, label spec, product-id column, split and seeds, training mode and
settings, max tokens, k, quantile, TF-IDF / lexical branches, fp32 kept or not), writes the union of
the parent's training rows (its catalog, re-read and checked unchanged, sampled as it was) and the
new files into one Parquet catalog beside the output (``<out>-catalog.parquet``: the candidate's
manifest points at it, so `evaluate` and `compare` re-split it exactly), and calls
`export.build.build`, the very code path of `train`, warm-started from the parent's PyTorch
checkpoint when one is found (`--torch-checkpoint`, else the folder recorded in its manifest, else
``<parent>-torch`` beside it when it belongs to that bundle). The candidate's manifest records
``training.parent`` (bundle_version, path), ``training.sources`` (every file with its sha256 and rows)
and ``training.result.warm_start`` (what was loaded). The product-id split is the parent's, so a
product keeps its side: rows the parent never trained on stay unseen by the candidate's training.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from export.build import BuildConfig, BuildResult, build
from export.bundle_writer import check_destination
from export.catalog import CatalogError, LabelSpec, check_columns, read_table
from export.config import ProgressHook, TrainConfig
from export.drift_index import DEFAULT_K
from export.encoders import DEFAULT_ENCODER
from export.evaluate import training_frame
from stream_app.core.bundle import Bundle, sha256_file
from stream_app.core.splits import SplitSpec
from stream_app.core.text import normalize_value

SOURCE_COLUMN = "retrain_source"


@dataclass
class Retrained:
    result: BuildResult
    catalog: Path
    sources: list[dict]
    warm_start: Path | None
    warm_start_note: str


def _missing(value: object) -> bool:
    return (value is None or (isinstance(value, float) and value != value)
            or (isinstance(value, str) and not value.strip()))


def find_checkpoint(parent: Bundle, given: Path | None) -> tuple[Path | None, str]:
    """(checkpoint folder or None, how it was found). A folder found on its own must belong to the
    parent: its recorded training result equals the manifest's (same run, same weights)."""
    if given is not None:
        if not (given / "labels.json").is_file():
            raise CatalogError(f"{given}: not a checkpoint (no labels.json); it is written by train --torch-checkpoint")
        return given, f"given: {given}"
    training = parent.manifest.training
    candidates = [Path(p) for p in (training.get("torch_checkpoint"),) if p]
    candidates.append(parent.path.with_name(parent.path.name + "-torch"))
    for folder in candidates:
        meta_path = folder / "labels.json"
        if not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("labels") == list(parent.manifest.labels) and \
                meta.get("training", {}).get("result") == training.get("result"):
            return folder, f"found: {folder}"
    return None, ("no checkpoint of the parent found (none recorded in its manifest or beside it): "
                  "cold start from the base encoder")


def recipe(parent: Bundle, **overrides: Any) -> BuildConfig:
    """The parent's BuildConfig as recorded in its manifest (data/out/etc. come from `overrides`)."""
    m, t = parent.manifest, parent.manifest.training
    encoder = overrides.pop("encoder", None)
    if encoder is None:
        if m.base_encoder == DEFAULT_ENCODER:
            encoder = None
        elif t.get("encoder_dir") and Path(t["encoder_dir"]).is_dir():
            encoder = t["encoder_dir"]
        else:
            raise CatalogError(f"{parent.path / 'manifest.json'}: encoder {m.base_encoder!r} is not the default "
                               f"and its folder is not recorded or gone ({t.get('encoder_dir')}); pass --encoder DIR")
    train = TrainConfig(**t["config"])
    if overrides.get("mode") or overrides.get("epochs"):
        train = TrainConfig(**{**t["config"], **{k: overrides[k] for k in ("mode", "epochs") if overrides.get(k)}})
    for key in ("mode", "epochs"):
        overrides.pop(key, None)
    tfidf = t.get("tfidf", (t.get("tfidf_branch") or {}).get("note") != "--no-tfidf")
    return BuildConfig(
        text_columns=dict(m.text_columns), template=m.text, label_spec=LabelSpec.from_dict(t["label_spec"]),
        id_column=t.get("id_column"), encoder=encoder, max_tokens=m.max_tokens, train=train,
        split=SplitSpec(**t["split"]), k=int(t.get("k") or m.drift.k or DEFAULT_K), quantile=m.drift.quantile,
        keep_fp32=bool(t.get("keep_fp32", m.fp32_model_file is not None)), lexical=bool(t.get("lexical_branch", False)),
        tfidf=bool(tfidf), **overrides,
    )


def _normalized(frame: pd.DataFrame, source: Path, config: BuildConfig, text_columns: dict[str, str],
                label_column: str | None) -> pd.DataFrame:
    """`frame`'s recipe columns, renamed to the parent's column names, as plain strings (None when missing)."""
    spec = config.label_spec
    wanted = {f"text field {f!r}": text_columns.get(f, c) for f, c in config.text_columns.items()}
    label_columns = list(spec.columns)
    if label_column:
        if spec.kind == "hierarchy":
            raise CatalogError("--label-column cannot rename hierarchy levels; give the new files the parent's "
                               f"columns {label_columns}")
        label_columns = [label_column]
    wanted.update({f"label ({spec.kind})": c for c in label_columns})
    if config.id_column:
        wanted["product id"] = config.id_column
    check_columns(frame, wanted, source)

    def text(value: object) -> str | None:
        return normalize_value(value) or None

    def label(value: object) -> str | None:
        if spec.kind != "multi":
            return None if _missing(value) else str(value).strip()
        from export.catalog import _labels_of

        labels = _labels_of(value, spec, -1)
        return json.dumps(list(labels), ensure_ascii=False) if labels else None

    out = pd.DataFrame(index=range(len(frame)))
    for field, column in config.text_columns.items():
        out[column] = [text(v) for v in frame[text_columns.get(field, column)]]
    for target, column in zip(spec.columns, label_columns, strict=True):
        out[target] = [label(v) for v in frame[column]]
    if config.id_column:
        # str() as load_examples does, so every product hashes to the side it had in the parent's split
        out[config.id_column] = [None if _missing(v) else str(v) for v in frame[config.id_column]]
    out[SOURCE_COLUMN] = str(source)
    return out


def union_catalog(parent: Bundle, config: BuildConfig, new_files: list[Path], path: Path,
                  text_columns: dict[str, str] | None = None, label_column: str | None = None,
                  include_parent: bool = True) -> list[dict]:
    """Write the parent's training rows plus the new files to `path` (Parquet, atomically); returns the sources."""
    parts: list[pd.DataFrame] = []
    sources: list[dict] = []
    parent_sha = parent.manifest.training.get("data_sha256")
    if include_parent:
        try:
            data, frame = training_frame(parent)
        except CatalogError as exc:
            raise CatalogError(f"the parent's training rows cannot be re-read: {exc} "
                               "(--no-parent-data trains on the new files only)") from exc
        parts.append(_normalized(frame, data, config, {}, None))
        sources.append({"file": str(data), "sha256": parent_sha, "rows": len(frame), "role": "parent training catalog",
                        "sample": parent.manifest.training.get("sample")})
    for file in new_files:
        digest = sha256_file(file) if Path(file).is_file() else None
        if include_parent and digest == parent_sha:
            sources.append({"file": str(file), "sha256": digest, "rows": 0,
                            "role": "skipped: the parent's own catalog"})
            continue
        frame = read_table(file)
        parts.append(_normalized(frame, Path(file), config, text_columns or {}, label_column))
        sources.append({"file": str(Path(file).resolve()), "sha256": digest, "rows": len(frame), "role": "new data"})
    if not parts:
        raise CatalogError("nothing to train on: no new rows and --no-parent-data")
    union = pd.concat(parts, ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        union.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sources


def retrain(parent_dir: Path, data_files: list[Path], out: Path, *, sample: int | None = None,
            mode: str | None = None, epochs: int | None = None, encoder: str | None = None,
            torch_checkpoint: Path | None = None, warm: bool = True, save_checkpoint: Path | None = None,
            catalog: Path | None = None, text_columns: dict[str, str] | None = None, label_column: str | None = None,
            include_parent: bool = True, replace: bool = False, progress: ProgressHook | None = None) -> Retrained:
    """See the module docstring."""
    parent = Bundle.load(parent_dir)
    check_destination(out, replace)
    checkpoint, note = find_checkpoint(parent, torch_checkpoint) if warm else (None, "--no-warm-start: cold start")
    catalog = catalog or out.with_name(out.name + "-catalog.parquet")
    config = recipe(parent, data=catalog, out=out, sample=sample, mode=mode, epochs=epochs, encoder=encoder,
                    replace=replace, torch_checkpoint=save_checkpoint, warm_start=checkpoint)
    sources = union_catalog(parent, config, list(data_files), catalog, text_columns, label_column, include_parent)
    config.lineage = {
        "parent": {"bundle_version": parent.version, "path": str(parent.path.resolve()),
                   "created_at": parent.manifest.created_at.isoformat()},
        "sources": sources,
        "retrained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "warm_start_note": note,
    }
    try:
        result = build(config, progress)
    except BaseException:
        catalog.unlink(missing_ok=True)  # build publishes nothing on failure; neither do we
        raise
    return Retrained(result, catalog, sources, checkpoint, note)


__all__ = ["Retrained", "find_checkpoint", "recipe", "retrain", "union_catalog"]
