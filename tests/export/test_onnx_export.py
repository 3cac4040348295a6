"""The ONNX export (`export.onnx_export`) with a TF-IDF branch attached matches PyTorch + scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.mark.bundle  # exports a model to ONNX
def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    """Export a model with random head and lexical weights, attach a TF-IDF branch, compare with
    PyTorch + scikit-learn on both outputs."""
    import torch

    from export.encoders import default_encoder_dir
    from export.model import TorchCategorizer
    from export.onnx_export import export_core, torch_parity
    from export.tfidf_branch import TfidfBranch, TokenTfidf, attach, fit_margins, special_ids
    from stream_app.core.model import load_tokenizer

    torch.manual_seed(0)
    encoder_dir = default_encoder_dir()
    model = TorchCategorizer.from_pretrained(encoder_dir, num_labels=5)
    torch.nn.init.normal_(model.lexical.table.weight, std=0.5)  # zeros at init would hide a broken branch
    tokenizer = load_tokenizer(encoder_dir / "tokenizer.json", 64)
    texts = ["a", "Caneca personalizada | caneca", "x " * 80, "Body | bebê body", "caneca caneca body", "kit body bebê"]
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    tfidf = TokenTfidf.fit(ids, special_ids(encoder_dir / "tokenizer.json"))
    linear = fit_margins(tfidf.transform(ids), np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 1, 3]])
    branch = TfidfBranch(tfidf, linear, 2.0, {})
    export_core(model, tmp_path / "core.onnx")
    attach(tmp_path / "core.onnx", tmp_path / "model.onnx", tfidf, linear, branch.weight)
    assert np.abs(branch.extra_logits(ids)).max() > 0.1  # the branch does contribute
    assert torch_parity(model, tmp_path / "model.onnx", ids, branch.extra_logits(ids), batch_size=4) < 1e-4
