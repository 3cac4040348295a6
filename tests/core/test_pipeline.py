"""The Pipeline (load, tokenize, predict, drift) runs without torch, and keeps the caller's order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from stream_app.core.bundle import Bundle
from stream_app.core.pipeline import Pipeline
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


def test_predictions_keep_input_order(test_bundle: Path) -> None:
    """Length bucketing sorts internally; results must come back in the caller's order.

    Checked on the fp32 graph, where padding and batch mates change nothing beyond float noise. (INT8
    dynamic quantization picks activation scales per batch, so there batch mates move scores a
    little; the top category is what must hold.)
    """
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
