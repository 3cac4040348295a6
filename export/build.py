"""Build a bundle from a catalog: read, split, train, export, quantize, index, calibrate, evaluate.

Contract: `build(config)` either publishes a complete, verified bundle at `config.out` and returns
its manifest and a summary, or raises with nothing written at `config.out`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.baseline import TfidfBaseline
from export.bundle_writer import check_destination, finalize_manifest, publish, staging_dir
from export.catalog import ELO7_TEXT_COLUMNS, CatalogError, LabelSpec, label_vocabulary, load_examples, read_table
from export.config import ProgressHook, TrainConfig, no_progress
from export.drift_index import DEFAULT_K, MAX_POINTS_PER_CENTROID, calibrate, choose_k, fit_centroids, sample_rows
from export.encoders import resolve_encoder
from export.metrics import score, target_matrix
from export.stages import StageTimer
from export.tfidf_branch import (
    TFIDF_CHECKPOINT_FILE,
    TRAINING_MARGIN_SCALE,
    EmptyVocabularyError,
    TfidfBranch,
    attach,
    choose_branch,
    fit_lexicon,
    special_ids,
)
from export.thresholds import tune_thresholds
from stream_app.core.bundle import SCHEMA_VERSION, Bundle, Manifest, Parity, sha256_file
from stream_app.core.decoding import decision_matrix
from stream_app.core.model import OnnxCategorizer, load_tokenizer
from stream_app.core.splits import SplitSpec, split_indices
from stream_app.core.text import TextTemplate

if TYPE_CHECKING:  # torch loads only once the input is read (see build)
    from tokenizers import Tokenizer

    from export.model import TorchCategorizer

PARITY_ROWS = 256
# INT8 vs fp32 parity of a frozen (quick) build: the first test rows only, since the fp32 graph runs
# at a third of the INT8 speed here and a quick build has nothing else to wait for (agreement ~0.998
# is known to +-0.002 on 1,024 rows); a fine-tuned build compares the whole test split.
QUICK_INT8_PARITY_ROWS = 1024


@dataclass
class BuildConfig:
    data: Path
    out: Path
    text_columns: dict[str, str] = field(default_factory=lambda: dict(ELO7_TEXT_COLUMNS))
    template: TextTemplate = field(default_factory=TextTemplate)
    label_spec: LabelSpec = field(default_factory=LabelSpec)
    id_column: str | None = "product_id"
    encoder: str | None = None
    max_tokens: int = 64
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitSpec = field(default_factory=SplitSpec)
    sample: int | None = None
    k: int = DEFAULT_K
    quantile: float = 0.99
    keep_fp32: bool = False
    lexical: bool = False  # the hashed bigram layer; the TF-IDF branch outperformed it (README)
    tfidf: bool = True
    replace: bool = False
    torch_checkpoint: Path | None = None
    from_checkpoint: Path | None = None
    # Retraining (export/retrain.py): start from these saved weights instead of the pretrained
    # encoder, and record `lineage` (parent bundle, data sources) in the manifest's training section.
    warm_start: Path | None = None
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    manifest: Manifest
    summary: dict[str, Any]


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts)]


def build(config: BuildConfig, progress: ProgressHook | None = None) -> BuildResult:
    check_destination(config.out, config.replace)
    encoder_name, encoder_dir = resolve_encoder(config.encoder)
    timer = StageTimer()

    with timer.stage("read"):
        frame = read_table(config.data)
        if config.sample is not None and config.sample < len(frame):
            frame = frame.sample(n=config.sample, random_state=config.train.seed).reset_index(drop=True)
        examples = load_examples(config.data, config.text_columns, config.template, config.label_spec,
                                 config.id_column, frame=frame)
        labels = label_vocabulary(examples.label_sets, str(config.data))
        sides = split_indices(examples.ids, config.split)
        for side, rows in sides.items():
            if len(rows) < 2:
                raise CatalogError(
                    f"{config.data}: the {side} split has {len(rows)} rows; use more data or larger fractions"
                )
        targets = target_matrix(examples.label_sets, labels).astype(np.float32)

    with timer.stage("tokenize"):
        tokenizer = load_tokenizer(encoder_dir / "tokenizer.json", config.max_tokens)
        ids = _encode(tokenizer, examples.texts)

    # torch is imported only now, so that bad input fails in a second, not after the torch import.
    from export.model import TorchCategorizer
    from export.onnx_export import export_core, int8_parity, int8_pooled_embeddings, quantize_int8, torch_parity
    from export.train import seed_everything, train_finetune, train_frozen

    progress = progress or no_progress
    lexicon, lexicon_note = None, "--no-tfidf"
    if config.tfidf:
        with timer.stage("tfidf"):
            try:
                lexicon = fit_lexicon([ids[i] for i in sides["train"]], targets[sides["train"]],
                                      [examples.ids[i] for i in sides["train"]],
                                      special_ids(encoder_dir / "tokenizer.json"),
                                      config.train.seed, out_of_fold=config.from_checkpoint is None)
            except EmptyVocabularyError as exc:
                lexicon_note = str(exc)
    drift_fit = None  # (L2-normalized training embeddings for k-means, what computed them), when training has them
    with timer.stage("train"):
        if config.from_checkpoint is not None:
            model, train_info = load_checkpoint(config.from_checkpoint, labels, config.max_tokens)
        else:
            start = encoder_dir if config.warm_start is None else checkpoint_encoder(config.warm_start)
            seed_everything(config.train.seed)  # the head's initial weights: torch seeds itself at random per process
            model = TorchCategorizer.from_pretrained(start, len(labels), lexical=config.lexical)
            warm = (None if config.warm_start is None
                    else warm_start(model, config.warm_start, labels, config.max_tokens))
            train_ids = [ids[i] for i in sides["train"]]
            # The transformer learns on top of the TF-IDF margins (out-of-fold, see fit_lexicon).
            offsets = (None if lexicon is None or lexicon.out_of_fold is None
                       else lexicon.out_of_fold * TRAINING_MARGIN_SCALE)
            if config.train.mode == "frozen":
                # The frozen encoder, quantized as the bundle's will be, embeds (a seeded sample of) the
                # training rows once: the head learns on these embeddings and the drift centroids are
                # fitted on them (L2-normalized, they are the bundle graph's own embeddings).
                rows = sample_rows(len(train_ids), config.train.frozen_rows, config.train.seed)
                head_ids = [train_ids[i] for i in rows]
                pooled = int8_pooled_embeddings(model, head_ids, tokenizer.token_to_id("[PAD]") or 0, progress,
                                                f"frozen INT8 encoder: embedding {len(rows)} training rows")
                train_info = train_frozen(model, head_ids, targets[sides["train"]][rows], config.train, progress,
                                          None if offsets is None else offsets[rows], pooled=pooled)
                train_info["head_rows"] = len(rows)
                normalized = pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)
                drift_fit = normalized.numpy(), "bundle encoder (INT8)"
            else:
                train_info = train_finetune(model, train_ids, targets[sides["train"]], config.train, progress, offsets)
            train_info["on_tfidf_margins"] = offsets is not None
            if warm is not None:
                train_info["warm_start"] = warm
        if config.torch_checkpoint is not None:
            save_checkpoint(model, encoder_dir, config.torch_checkpoint, labels, config.max_tokens,
                            {"config": asdict(config.train), "result": train_info})

    with staging_dir(config.out) as staging:
        core_path, core_int8_path = staging / "model.core.onnx", staging / "model.core.int8.onnx"
        fp32_path, int8_path = staging / "model.fp32.onnx", staging / "model.int8.onnx"
        with timer.stage("export"):
            export_core(model, core_path)
        with timer.stage("quantize"):
            # Encoder and head are quantized alone; the fp32 TF-IDF branch then joins both graphs
            # (the quantizer never touched it: the same INT8 graph as quantizing the whole one).
            quantize_int8(core_path, core_int8_path)
            shutil.copyfile(encoder_dir / "tokenizer.json", staging / "tokenizer.json")

        with timer.stage("embed"):
            # One pass of the INT8 core over validation and test gives the bundle graph's embeddings and
            # its logits before the branch; the weight is chosen on them, and the bundle graph's
            # probabilities are those logits plus the weighted margins (checked on the graph below).
            int8_core = OnnxCategorizer(core_int8_path, staging / "tokenizer.json", config.max_tokens,
                                        outputs=("embedding", "logits"))
            core_out = {side: int8_core.run_ids([ids[i] for i in sides[side]]) for side in ("validation", "test")}
            if drift_fit is None:  # the training rows k-means uses: faiss would sample k * 256 of more
                rows = sample_rows(len(sides["train"]), config.k * MAX_POINTS_PER_CENTROID, config.train.seed)
                drift_fit = int8_core.run_ids([ids[sides["train"][i]] for i in rows]).embeddings, "bundle graph (INT8)"

        with timer.stage("tfidf_weight"):
            branch = TfidfBranch.off(lexicon_note) if lexicon is None else choose_branch(
                lexicon, core_out["validation"].probabilities, [ids[i] for i in sides["validation"]],
                targets[sides["validation"]])
            attach(core_path, fp32_path, branch.tfidf, branch.linear, branch.weight)
            attach(core_int8_path, int8_path, branch.tfidf, branch.linear, branch.weight)
            core_path.unlink()
            core_int8_path.unlink()
            if config.torch_checkpoint is not None:
                branch.save(config.torch_checkpoint / TFIDF_CHECKPOINT_FILE)  # the naive benchmark adds it in numpy
            out = {side: branch.complete(o, [ids[i] for i in sides[side]]) for side, o in core_out.items()}

        with timer.stage("parity"):
            test_ids = [ids[i] for i in sides["test"]]
            max_diff = torch_parity(model, fp32_path, test_ids[:PARITY_ROWS],
                                    branch.extra_logits(test_ids[:PARITY_ROWS]))
            # The bundle graph computes what was composed above, on the same batches (INT8 activations
            # are quantized per batch, so the batches must match); else the metrics below would not
            # describe the graph in the bundle.
            int8 = OnnxCategorizer(int8_path, staging / "tokenizer.json", config.max_tokens)
            shipped = int8.run_ids(test_ids[:PARITY_ROWS])
            composed = branch.complete(int8_core.run_ids(test_ids[:PARITY_ROWS]), test_ids[:PARITY_ROWS])
            gap = max(float(np.abs(shipped.embeddings - composed.embeddings).max()),
                      float(np.abs(shipped.probabilities - composed.probabilities).max()))
            if gap > 1e-4:  # float32 rounding of the margins, times w up to 64, stays far below this
                raise RuntimeError(f"{int8_path.name} differs from its INT8 core + TF-IDF margins by {gap:.2e}")
            fp32 = OnnxCategorizer(fp32_path, staging / "tokenizer.json", config.max_tokens)
            n = len(test_ids) if config.train.mode != "frozen" else min(len(test_ids), QUICK_INT8_PARITY_ROWS)
            reference = fp32.run_ids(test_ids[:n])
            parity = Parity(
                fp32_vs_torch_max_abs_diff=max_diff,
                rows=n,
                **int8_parity(reference.embeddings, reference.probabilities, out["test"].embeddings[:n],
                              out["test"].probabilities[:n]),
            )
            del int8, fp32, int8_core

        with timer.stage("drift_index"):
            fit_embeddings, fit_source = drift_fit
            k = choose_k(len(fit_embeddings), config.k)
            index = fit_centroids(fit_embeddings, k, config.train.seed)
            index.save(staging / "centroids.faiss")
            # tau and the reference shares come from the bundle graph's own validation embeddings.
            drift = calibrate(index, out["validation"].embeddings, out["validation"].probabilities.argmax(1),
                              len(labels), config.quantile, n_fit=len(fit_embeddings),
                              product_ids=[examples.ids[i] for i in sides["validation"]])

        with timer.stage("thresholds"):
            thresholds = tune_thresholds(out["validation"].probabilities, targets[sides["validation"]] > 0.5)

        with timer.stage("evaluate"):
            test_sets = [examples.label_sets[i] for i in sides["test"]]
            test_probs = out["test"].probabilities
            model_metrics = score(labels, decision_matrix(test_probs, thresholds), test_probs.argmax(1), test_sets)
            baseline = TfidfBaseline(labels, config.train.seed).fit(
                [examples.texts[i] for i in sides["train"]], [examples.label_sets[i] for i in sides["train"]])
            decisions, top = baseline.decide([examples.texts[i] for i in sides["test"]])
            baseline_metrics = score(labels, decisions, top, test_sets)

        if not config.keep_fp32:
            fp32_path.unlink()
        label_counts = {label: int(targets[:, j].sum()) for j, label in enumerate(labels)}
        summary = {
            "data": str(Path(config.data).resolve()),
            "rows_total": examples.total_rows,
            "rows_used": len(examples),
            "rows_skipped": examples.skipped,
            "label_counts": label_counts,
            "split_sizes": {side: len(rows) for side, rows in sides.items()},
            "test_metrics": _headline(model_metrics),
            "baseline_test_metrics": _headline(baseline_metrics),
            "parity": parity.model_dump(),
            "drift": {"k": drift.k, "tau": drift.tau, "quantile": drift.quantile, "fit_rows": drift.n_fit,
                      "fit_embeddings": fit_source},
            "tfidf_branch": branch.describe(),
            "seconds": timer.seconds,
        }
        fields = dict(
            schema_version=SCHEMA_VERSION,
            created_at=datetime.now(UTC),
            base_encoder=encoder_name,
            text=config.template,
            text_columns=config.text_columns,
            max_tokens=config.max_tokens,
            embedding_dim=int(out["validation"].embeddings.shape[1]),
            labels=labels,
            thresholds=thresholds,
            fp32_model_file="model.fp32.onnx" if config.keep_fp32 else None,
            drift=drift,
            parity=parity,
            metrics={"test": model_metrics, "baseline_test": baseline_metrics},
            training={
                "data": summary["data"],
                "data_sha256": sha256_file(Path(config.data)),
                "sample": config.sample,
                "id_column": config.id_column,
                "label_spec": config.label_spec.describe(),
                "split": asdict(config.split),
                "lexical_branch": config.lexical,
                "tfidf_branch": branch.describe(),
                "config": asdict(config.train),
                "result": train_info,
                "rows_used": len(examples),
                "rows_skipped": examples.skipped,
                "label_counts": label_counts,
                "split_sizes": summary["split_sizes"],
                "seconds": timer.seconds,
                # the recipe as asked for (retrain reads it back): encoder folder, k before its cap, ...
                "encoder_dir": str(encoder_dir),
                "k": config.k,
                "tfidf": config.tfidf,
                "keep_fp32": config.keep_fp32,
                "torch_checkpoint": None if config.torch_checkpoint is None else str(config.torch_checkpoint.resolve()),
                **config.lineage,
            },
        )
        manifest = finalize_manifest(staging, fields)
        Bundle.load(staging)  # verify what we are about to publish
        publish(staging, config.out)
    return BuildResult(manifest, summary)


def load_checkpoint(folder: Path, labels: list[str], max_tokens: int) -> tuple[TorchCategorizer, dict[str, Any]]:
    """A model saved by `save_checkpoint` (re-export without retraining); labels and max tokens must match."""
    import json

    import torch

    from export.model import TorchCategorizer

    meta_path = folder / "labels.json"
    if not meta_path.is_file():
        raise CatalogError(f"{folder}: not a checkpoint (no labels.json)")
    meta = json.loads(meta_path.read_text())
    if meta["labels"] != labels:
        raise CatalogError(f"{meta_path}: checkpoint labels {meta['labels']} differ from the catalog's {labels}")
    if meta["max_tokens"] != max_tokens:
        raise CatalogError(f"{meta_path}: checkpoint max_tokens {meta['max_tokens']} != --max-tokens {max_tokens}")
    model = TorchCategorizer.from_pretrained(folder / "encoder", len(labels), lexical=meta["lexical"])
    missing, unexpected = model.load_state_dict(torch.load(folder / "categorizer_head.pt"), strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise CatalogError(f"{folder / 'categorizer_head.pt'}: does not fit the model "
                           f"(missing {missing}, unexpected {unexpected})")
    model.eval()
    return model, {"from_checkpoint": str(folder.resolve()), **meta.get("training", {})}


def checkpoint_encoder(folder: Path) -> Path:
    """The encoder folder of a checkpoint saved by `save_checkpoint` (CatalogError naming what is missing)."""
    if not (folder / "labels.json").is_file():
        raise CatalogError(f"{folder}: not a checkpoint (no labels.json)")
    if not (folder / "encoder" / "config.json").is_file():
        raise CatalogError(f"{folder / 'encoder'}: the checkpoint has no encoder folder")
    return folder / "encoder"


def warm_start(model: TorchCategorizer, folder: Path, labels: list[str], max_tokens: int) -> dict[str, Any]:
    """Load a checkpoint's head into a model built on its encoder (`checkpoint_encoder`), before training.

    The head (and the lexical branch) load row by row for the labels both know, so a catalog with a
    new category still starts from the parent's weights; new labels keep a fresh row."""
    import json

    import torch

    meta_path = folder / "labels.json"
    meta = json.loads(meta_path.read_text())
    if meta["max_tokens"] != max_tokens:
        raise CatalogError(f"{meta_path}: checkpoint max_tokens {meta['max_tokens']} != {max_tokens}")
    state = torch.load(folder / "categorizer_head.pt")
    old = {label: i for i, label in enumerate(meta["labels"])}
    shared = [(j, old[label]) for j, label in enumerate(labels) if label in old]
    with torch.no_grad():
        if shared:
            new_rows, old_rows = (torch.tensor(x) for x in zip(*shared, strict=True))
            model.head.weight[new_rows] = state["head.weight"][old_rows]
            model.head.bias[new_rows] = state["head.bias"][old_rows]
        lexical = "off"
        if model.lexical is not None and meta.get("lexical"):
            if meta["labels"] == labels:
                model.lexical.load_state_dict({k[len("lexical."):]: v for k, v in state.items()
                                               if k.startswith("lexical.")})
                lexical = "loaded"
            else:
                lexical = "reinitialized (labels changed)"
    return {"from": str(folder.resolve()), "labels_loaded": len(shared), "labels_new": len(labels) - len(shared),
            "lexical": lexical}


def save_checkpoint(model: TorchCategorizer, encoder_dir: Path, folder: Path, labels: list[str], max_tokens: int,
                    training: dict[str, Any]) -> None:
    """The trained weights in PyTorch form: HF encoder folder + head/lexical state (not part of the bundle)."""
    import json

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(folder / "encoder"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (encoder_dir / name).is_file():
            shutil.copyfile(encoder_dir / name, folder / "encoder" / name)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    torch.save(state, folder / "categorizer_head.pt")
    (folder / "labels.json").write_text(json.dumps({"labels": labels, "max_tokens": max_tokens, "training": training,
                                                    "lexical": model.lexical is not None}, ensure_ascii=False))


def _headline(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("rows", "accuracy", "micro_f1", "macro_f1")}
