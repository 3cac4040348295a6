"""The runtime path (load, tokenize, predict, drift) works without torch, and matches PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.fixtures.bundle import ROOT

PROBE = """
import json, sys
from stream_app.core.bundle import Bundle
from stream_app.core.pipeline import Pipeline
bundle = Bundle.load(sys.argv[1])
preds = Pipeline(bundle, threads=1).predict(["Caneca personalizada | caneca porcelana", "Body bebê | body menino"])
print(json.dumps({"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                  "tops": [p.top_category for p in preds]}))
"""


def test_runtime_path_imports_no_torch(test_bundle: Path) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, str(test_bundle)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["torch"] is False and probe["transformers"] is False
    assert probe["tops"][1] == "Bebê"


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    """Export a model with random head and lexical weights, attach a TF-IDF branch, compare with
    PyTorch + scikit-learn on both outputs."""
    import torch

    from export.encoders import default_encoder_dir
    from export.model import CategorizerModel
    from export.onnx_export import export_core, torch_parity
    from export.tfidf_branch import TfidfBranch, TokenTfidf, attach, fit_margins, special_ids
    from stream_app.core.model import load_tokenizer

    torch.manual_seed(0)
    encoder_dir = default_encoder_dir()
    model = CategorizerModel.from_pretrained(encoder_dir, num_labels=5)
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


def test_int8_graph_agrees_with_fp32(test_bundle: Path) -> None:
    import onnx
    import onnxruntime as ort

    from stream_app.core.bundle import Bundle
    from stream_app.core.model import Categorizer

    bundle = Bundle.load(test_bundle)
    fp32 = Categorizer(bundle.fp32_model_path, bundle.tokenizer_path, bundle.manifest.max_tokens)
    int8 = Categorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens)
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


def test_predictions_keep_input_order(test_bundle: Path) -> None:
    """Length bucketing sorts internally; results must come back in the caller's order.

    Checked on the fp32 graph, where padding and batch mates change nothing beyond float noise. (INT8
    dynamic quantization picks activation scales per batch, so there batch mates move scores a
    little; the top category is what must hold.)
    """
    from stream_app.core.bundle import Bundle
    from stream_app.core.pipeline import Pipeline

    texts = ["Body bebê | body", "x " * 60, "Colar | colar prata", "a", "Quadro decorativo | quadro"]
    bundle = Bundle.load(test_bundle)
    fp32 = Pipeline(bundle, threads=1, batch_size=2, use_fp32=True)
    batched = fp32.run(texts)
    for i, text in enumerate(texts):
        single = fp32.run([text])
        assert np.allclose(single.probabilities[0], batched.probabilities[i], atol=1e-5)
        assert np.allclose(single.embeddings[0], batched.embeddings[i], atol=1e-5)
    int8 = Pipeline(bundle, threads=1, batch_size=2)
    assert [p.top_category for p in int8.predict(texts)] == [int8.predict([t])[0].top_category for t in texts]
    assert int8.predict([]) == []
