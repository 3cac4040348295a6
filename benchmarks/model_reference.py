"""``python -m benchmarks.model_reference``: the bundle's INT8 graph against plain MiniLM INT8, side by side.

Usage::

    python -m benchmarks.model_reference --bundle models/default [--texts 3000] [--rounds 3]

Why: the speed target (>= 1,000 texts/s at batch 32 for a MiniLM-size INT8 encoder) was set from
shared/NOTES.md, where plain MiniLM INT8 ran at ~1,600 texts/s at 24 tokens. This shared machine's
speed drifts by several times between sessions, so an absolute figure alone cannot say whether the
bundle or the machine is slow. This command times, on the same token ids (length-sorted batches,
as the worker runs them), the graphs below taking turns batch by batch (the order rotating from
one batch to the next), so that all of them run under the same load: the speed of this shared
machine changes within seconds, and rounds of one graph after the other measured the load more
than the graphs (the bundle came out anywhere from 0.74 to 1.09 of the plain encoder that way):

* ``bundle``: the bundle's INT8 graph (encoder + head + TF-IDF branch), what the worker runs;
* ``plain``: the bundle's base encoder alone, mean-pooled, exported and quantized the same way
  (INT8 per-channel MatMuls), built once into .cache/bench/ (needs the build extras: torch);
* ``core``: the same bundle graph cut just before its TF-IDF branch (outputs ``embedding`` and the
  transformer's ``logits``): 1 - core / bundle (times) is what the branch costs inside the graph;
* ``tfidf``: the TF-IDF branch alone (cut out of the bundle graph), timed on its own after the
  others: a graph this small timed between large ones on a loaded machine measures its thread
  pool's wake-ups more than its work;
* a 2048x2048 float32 matmul, as a machine-speed probe.

It prints the median round of each (a round: every batch once) and the median over rounds of each
ratio (bundle / plain, TF-IDF branch / bundle, both from the same round). Nothing is asserted.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import typer
from rich.console import Console
from rich.table import Table

from benchmarks.data import ROOT, load_products, render_texts
from stream_app.core.bundle import Bundle
from stream_app.core.model import OnnxCategorizer, pad_batch, session_options

CACHE = ROOT / ".cache" / "bench"
NOTES_PLAIN_INT8_TPS = 1600.0  # shared/NOTES.md: plain MiniLM INT8 per-channel, batch 32, ~24 tokens
console = Console()


def plain_encoder_graph(encoder_dir: Path) -> Path:
    """The base encoder alone (mean-pooled, normalized), INT8 per-channel; cached by encoder path."""
    import hashlib

    key = hashlib.sha256(str(encoder_dir.resolve()).encode()).hexdigest()[:12]
    int8 = CACHE / f"plain-{key}.int8.onnx"
    if int8.is_file():
        return int8
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    from export.model import mean_pool
    from export.train import pad

    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return torch.nn.functional.normalize(mean_pool(hidden, attention_mask), dim=1)

    CACHE.mkdir(parents=True, exist_ok=True)
    fp32 = CACHE / f"plain-{key}.fp32.onnx"
    ids, mask = pad([[101, 2000, 2001, 102], [101, 2000, 102]])
    with torch.no_grad():
        torch.onnx.export(Plain().eval(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                        "embedding": {0: "b"}})
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])
    fp32.unlink()
    return int8


def tfidf_only_graph(bundle: Bundle) -> Path | None:
    """The bundle graph cut down to its inputs -> TF-IDF margins (None when the bundle has no branch).

    The branch reads input_ids and attention_mask (bundles before the gather-based branch: input_ids
    only, through a TfIdfVectorizer node named tfidf_counts)."""
    import onnx

    graph = onnx.load(str(bundle.model_path), load_external_data=False).graph
    if "tfidf_margins" not in {o for n in graph.node for o in n.output}:
        return None
    inputs = ["input_ids"] if "tfidf_counts" in {n.name for n in graph.node} else ["input_ids", "attention_mask"]
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"tfidf-{bundle.version}.onnx"
    if not out.is_file():
        onnx.utils.extract_model(str(bundle.model_path), str(out), inputs, ["tfidf_margins"])
    return out


def core_only_graph(bundle: Bundle) -> Path:
    """The bundle graph cut before the TF-IDF branch and the sigmoid: inputs -> embedding, logits."""
    import onnx

    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"core-{bundle.version}.onnx"
    if not out.is_file():
        onnx.utils.extract_model(str(bundle.model_path), str(out), ["input_ids", "attention_mask"],
                                 ["embedding", "logits"])
    return out


def _batches(ids: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.argsort([len(x) for x in ids], kind="stable")
    return [pad_batch([ids[i] for i in order[start : start + batch_size]], pad_id)
            for start in range(0, len(ids), batch_size)]


def _interleaved(sessions: dict[str, ort.InferenceSession], batches: list[tuple[np.ndarray, np.ndarray]],
                 rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each session over all batches, the sessions taking turns batch by batch
    (in an order that rotates from one batch to the next): this shared machine's speed changes within
    seconds, and only graphs timed side by side on the same batches compare."""
    feeds = {}
    for name, session in sessions.items():
        wanted = {i.name for i in session.get_inputs()}
        feeds[name] = [{k: v for k, v in (("input_ids", ids), ("attention_mask", mask)) if k in wanted}
                       for ids, mask in batches]
        session.run(None, feeds[name][0])  # warm-up: arenas, first-run allocations
    names = list(sessions)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for b in range(len(batches)):
            for k in range(len(names)):
                name = names[(b + k) % len(names)]
                start = time.perf_counter()
                sessions[name].run(None, feeds[name][b])
                spent[name] += time.perf_counter() - start
        for name in names:
            seconds[name].append(spent[name])
    return seconds


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * size**3 / (time.perf_counter() - start) / 1e9


def main(
    bundle: Path = typer.Option(Path("models/default"), "--bundle", help="Bundle directory."),
    texts: int = typer.Option(3000, "--texts", min=32, help="Elo7 texts to time."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Rounds over all texts; the median is reported."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    threads: int = typer.Option(2, "--threads", min=1),
    encoder: Path | None = typer.Option(None, "--encoder",
                                        help="Plain encoder folder (default: the installed MiniLM)."),
) -> None:
    """Time the bundle graph, the plain encoder and the bundle cut before its TF-IDF branch, taking turns batch by
    batch."""
    from export.encoders import resolve_encoder

    loaded = Bundle.load(bundle)
    encoder_dir = encoder or resolve_encoder(None)[1]
    sample = render_texts(loaded.manifest.text, load_products(texts))
    categorizer = OnnxCategorizer(loaded.model_path, loaded.tokenizer_path, loaded.manifest.max_tokens, threads,
                                  batch_size)
    ids = categorizer.encode(sample)
    batches = _batches(ids, batch_size, categorizer.pad_id)
    options = session_options(threads)
    sessions = {"bundle": categorizer.session,
                "plain": ort.InferenceSession(str(plain_encoder_graph(encoder_dir)), options,
                                              providers=["CPUExecutionProvider"])}
    sessions["core"] = ort.InferenceSession(str(core_only_graph(loaded)), options, providers=["CPUExecutionProvider"])
    gflops = [matmul_gflops()]
    seconds = _interleaved(sessions, batches, rounds)
    gflops.append(matmul_gflops())
    cut = tfidf_only_graph(loaded)
    if cut is not None:
        branch = ort.InferenceSession(str(cut), options, providers=["CPUExecutionProvider"])
        seconds["tfidf"] = [_interleaved({"tfidf": branch}, batches, 1)["tfidf"][0] for _ in range(rounds)]
    runs = {name: [len(ids) / t for t in values] for name, values in seconds.items()}
    median = {name: statistics.median(values) for name, values in runs.items()}
    # Ratios per round (both graphs timed on the same batches, turn by turn), then their median.
    over_plain = statistics.median(p / b for p, b in zip(seconds["plain"], seconds["bundle"], strict=True))
    result = {
        "bundle": str(bundle), "bundle_version": loaded.version, "texts": len(ids), "batch_size": batch_size,
        "threads": threads, "mean_tokens": float(np.mean([len(x) for x in ids])),
        "texts_per_s": median, "rounds": runs, "matmul_gflops": statistics.median(gflops),
        "bundle_over_plain": over_plain,
        "plain_over_notes": median["plain"] / NOTES_PLAIN_INT8_TPS,
        "bundle_at_notes_speed": over_plain * NOTES_PLAIN_INT8_TPS,
    }
    result["tfidf_share"] = statistics.median(1 - c / b
                                              for c, b in zip(seconds["core"], seconds["bundle"], strict=True))
    table = Table(title=f"INT8 graphs, {len(ids)} Elo7 texts (mean {result['mean_tokens']:.1f} tokens), "
                        f"sorted batches of {batch_size}, {threads} threads, taking turns, median of {rounds} rounds")
    table.add_column("graph")
    table.add_column("texts/s", justify="right")
    table.add_column("note")
    table.add_row("bundle (encoder + head + TF-IDF)", f"{median['bundle']:,.0f}", "what the worker runs")
    table.add_row("plain encoder, mean-pooled", f"{median['plain']:,.0f}",
                  f"NOTES measured ~{NOTES_PLAIN_INT8_TPS:,.0f} here: this machine now runs at "
                  f"x{result['plain_over_notes']:.2f} of that")
    table.add_row("bundle cut before the TF-IDF branch", f"{median['core']:,.0f}",
                  f"the branch costs {result['tfidf_share']:.1%} of the bundle's time")
    if "tfidf" in median:
        result["tfidf_branch_mb"] = cut.stat().st_size / 1e6
        table.add_row("TF-IDF branch alone", f"{median['tfidf']:,.0f}",
                      f"timed on its own; {result['tfidf_branch_mb']:.1f} MB of the graph")
    table.add_row("bundle / plain", f"{result['bundle_over_plain']:.2f}",
                  f"-> {result['bundle_at_notes_speed']:,.0f} texts/s at the speed NOTES measured")
    table.add_row("float32 matmul 2048^2", f"{result['matmul_gflops']:.0f} GFLOP/s", "machine-speed probe")
    console.print(table)
    console.print(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
