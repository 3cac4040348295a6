"""OnnxCategorizer: long texts are cut to a character budget before tokenizing, without changing the ids;
the INT8 graph agrees with the fp32 one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stream_app.core.bundle import Bundle
from stream_app.core.model import OnnxCategorizer, char_budget


class _SpyTokenizer:
    def __init__(self, real: Any) -> None:
        self.real = real
        self.lengths: list[int] = []

    def encode_batch(self, texts: list[str]) -> Any:
        self.lengths += [len(t) for t in texts]
        return self.real.encode_batch(texts)


def test_a_megabyte_title_is_cut_before_tokenizing_and_tokenizes_the_same(test_bundle: Path) -> None:
    bundle = Bundle.load(test_bundle)
    max_tokens = bundle.manifest.max_tokens
    categorizer = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, max_tokens, threads=1)
    real = categorizer.tokenizer
    spy = _SpyTokenizer(real)
    categorizer.tokenizer = spy  # type: ignore[assignment]
    texts = ["Caneca personalizada de porcelana " * 30_000, "x" * 1_000_000, "Body bebê | body menino"]
    ids = categorizer.encode(texts)
    assert max(spy.lengths) <= char_budget(max_tokens) < 10_000
    for text, got in zip(texts, ids, strict=True):
        assert got == real.encode(text).ids  # the whole text, truncated by the tokenizer itself
        assert len(got) <= max_tokens


def test_int8_graph_agrees_with_fp32(test_bundle: Path) -> None:
    import onnx
    import onnxruntime as ort

    bundle = Bundle.load(test_bundle)
    fp32 = OnnxCategorizer(bundle.fp32_model_path, bundle.tokenizer_path, bundle.manifest.max_tokens)
    int8 = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens)
    texts = ["Kit festa infantil | festa kit", "Colar de prata | colar prata pingente",
             "Quadro decorativo | quadro sala"]
    a, b = fp32.run(texts), int8.run(texts)
    assert np.allclose(np.linalg.norm(a.embeddings, axis=1), 1, atol=1e-4)
    assert (a.probabilities.argmax(1) == b.probabilities.argmax(1)).all()
    assert float((a.embeddings * b.embeddings).sum(1).min()) > 0.97
    graph = onnx.load(str(bundle.fp32_model_path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["embedding", "probabilities"]
    session = ort.InferenceSession(str(bundle.model_path))
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert all(isinstance(d, str) for d in shapes["input_ids"]), "batch and sequence must be dynamic"
