"""Categorizer: long texts are cut to a character budget before tokenizing, without changing the ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_app.core.bundle import Bundle
from stream_app.core.model import Categorizer, char_budget


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
    categorizer = Categorizer(bundle.model_path, bundle.tokenizer_path, max_tokens, threads=1)
    real = categorizer.tokenizer
    spy = _SpyTokenizer(real)
    categorizer.tokenizer = spy  # type: ignore[assignment]
    texts = ["Caneca personalizada de porcelana " * 30_000, "x" * 1_000_000, "Body bebê | body menino"]
    ids = categorizer.encode(texts)
    assert max(spy.lengths) <= char_budget(max_tokens) < 10_000
    for text, got in zip(texts, ids, strict=True):
        assert got == real.encode(text).ids  # the whole text, truncated by the tokenizer itself
        assert len(got) <= max_tokens
