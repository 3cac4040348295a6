"""The ONNX categorizer: tokenizer + onnxruntime session, no torch.

Contract: `OnnxCategorizer.run(texts)` returns L2-normalized embeddings [B, d] and sigmoid probabilities
[B, C] in the order of `texts`. Texts are truncated to the bundle's max tokens. Inside, texts are
sorted by token length and cut into batches of at most `batch_size` texts where padding costs more
than another call (`plan_batches`): padding to the batch maximum is the largest avoidable cost on
CPU, and a fixed cut every `batch_size` texts pads most exactly where latency matters, in the small
windows of light and medium load.

Long texts: before tokenizing, a text is cut to `char_budget(max_tokens)` characters. Every kept
token covers at least one character and WordPiece never makes a token of more than 100 characters
(longer words become one [UNK]), so the cut changes nothing the model sees except when a word of
over 100 characters straddles the cut; without it a 1 MB title is tokenized whole (~100 MB, ~1 s)
before truncation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


@dataclass(frozen=True, slots=True)
class ModelOutput:
    embeddings: np.ndarray  # float32 [B, d], L2-normalized
    probabilities: np.ndarray  # float32 [B, C]


# WordPiece's max_input_chars_per_word (100) plus one separating space.
_CHARS_PER_TOKEN = 101


def char_budget(max_tokens: int) -> int:
    """Characters of text that can matter for ``max_tokens`` tokens (see module docstring)."""
    return max_tokens * _CHARS_PER_TOKEN


def load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """The bundle's fast tokenizer with truncation on and padding off (we pad per bucket)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


# What one more onnxruntime call costs, in padded tokens: with one intra-op thread a call of n texts
# padded to L tokens takes about (10 + n * L) x 0.07 ms for L <= 64 (measured on the bundle's INT8
# encoder; docs/benchmarks.md, "Model calls"). The cut is not sensitive to it: with 5 or 20 real
# windows ran within 6% of 10.
CALL_OVERHEAD_TOKENS = 10


def plan_batches(lengths: Sequence[int], max_rows: int, overhead_tokens: float = CALL_OVERHEAD_TOKENS,
                 ) -> list[tuple[int, int]]:
    """Cut ``lengths`` (token counts sorted ascending) into model calls: ``[start, end)`` ranges.

    Contract: the ranges are contiguous, in order, cover ``range(len(lengths))`` exactly, each holds
    1..``max_rows`` texts, and together they minimize ``sum(overhead_tokens + rows * longest)``,
    the padded tokens computed plus a per-call cost (dynamic programming over the sorted order,
    O(len * max_rows)). Raises ValueError if ``max_rows`` < 1.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    count = len(lengths)
    best = [0.0] + [float("inf")] * count  # best[j]: cheapest plan of the first j texts
    start_of = [0] * (count + 1)  # where the last call of that plan starts
    for end in range(1, count + 1):
        longest = lengths[end - 1]  # sorted: the last text of a call is its longest
        for start in range(max(0, end - max_rows), end):
            cost = best[start] + overhead_tokens + (end - start) * longest
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    plan: list[tuple[int, int]] = []
    end = count
    while end > 0:
        plan.append((start_of[end], end))
        end = start_of[end]
    return plan[::-1]


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 [len(ids), longest], right-padded with `pad_id`."""
    width = max(1, max((len(x) for x in ids), default=0))
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


class OnnxCategorizer:
    """Runs one exported graph. Thread-safe for concurrent `run` calls (onnxruntime sessions are)."""

    def __init__(self, model_path: Path, tokenizer_path: Path, max_tokens: int, threads: int = 2, batch_size: int = 32,
                 outputs: tuple[str, str] = ("embedding", "probabilities")) -> None:
        """`outputs`: the graph's two output names read into `ModelOutput` (the build reads
        ``("embedding", "logits")`` of its intermediate graph this way)."""
        self.outputs = list(outputs)
        self.tokenizer = load_tokenizer(tokenizer_path, max_tokens)
        self.session = ort.InferenceSession(
            str(model_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.batch_size = batch_size
        # How a sorted micro-batch is cut into calls; the benchmark swaps in a fixed cut to compare.
        self.plan: Callable[[Sequence[int], int], list[tuple[int, int]]] = plan_batches
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.max_chars = char_budget(max_tokens)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        cut = [text[: self.max_chars] for text in texts]
        return [enc.ids for enc in self.tokenizer.encode_batch(cut)]

    def run(self, texts: Sequence[str]) -> ModelOutput:
        ids = self.encode(texts)
        return self.run_ids(ids)

    def run_ids(self, ids: Sequence[Sequence[int]]) -> ModelOutput:
        """Run already-tokenized inputs (used by benchmarks to time the model alone)."""
        count = len(ids)
        if count == 0:
            dim = self.session.get_outputs()[0].shape[-1]
            labels = self.session.get_outputs()[1].shape[-1]
            return ModelOutput(np.zeros((0, dim if isinstance(dim, int) else 0), np.float32),
                               np.zeros((0, labels if isinstance(labels, int) else 0), np.float32))
        order = np.argsort([len(x) for x in ids], kind="stable")
        embeddings: list[np.ndarray] = []
        probabilities: list[np.ndarray] = []
        for start, end in self.plan([len(ids[i]) for i in order], self.batch_size):
            input_ids, mask = pad_batch([ids[i] for i in order[start:end]], self.pad_id)
            emb, prob = self.session.run(self.outputs, {"input_ids": input_ids, "attention_mask": mask})
            embeddings.append(emb)
            probabilities.append(prob)
        inverse = np.empty(count, dtype=np.int64)
        inverse[order] = np.arange(count)
        return ModelOutput(
            np.concatenate(embeddings)[inverse].astype(np.float32, copy=False),
            np.concatenate(probabilities)[inverse].astype(np.float32, copy=False),
        )
