"""The TF-IDF branch: the ONNX graph computes exactly the features and margins scikit-learn fitted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from export.tfidf_branch import (
    EmptyVocabularyError,
    LinearMargins,
    TokenTfidf,
    attach,
    choose_weight,
    fit_lexicon,
    fit_margins,
)
from stream_app.core.model import pad_batch

CLS, SEP, PAD, UNK = 101, 102, 0, 100
SPECIAL = {CLS, SEP, PAD, UNK}
LABELS = 3


def core_graph(path: Path, labels: int = LABELS) -> Path:
    """A stand-in for the exported transformer: embedding = mean of the mask, logits = zeros."""
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["mask_f"], ["embedding"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["embedding", "zeros"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "core",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])],
        [onnx.numpy_helper.from_array(np.zeros((1, labels), np.float32), "zeros")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def run_graph(path: Path, ids: list[list[int]]) -> np.ndarray:
    input_ids, mask = pad_batch(ids, PAD)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input_ids": input_ids, "attention_mask": mask})[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


sequences = st.lists(st.integers(2000, 2012), min_size=0, max_size=14).map(lambda s: [CLS, *s, SEP])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=st.lists(sequences, min_size=6, max_size=30), queries=st.lists(sequences, min_size=1, max_size=8),
       weight=st.sampled_from([0.5, 1.0, 4.0]))
def test_graph_computes_the_fitted_margins(tmp_path: Path, train, queries, weight) -> None:
    """Repeated n-grams, empty texts and unseen ids: graph output == sigmoid(weight * sklearn margins)."""
    try:
        tfidf = TokenTfidf.fit(train, SPECIAL)
    except EmptyVocabularyError:
        return
    rng = np.random.default_rng(len(train))
    linear = LinearMargins(rng.normal(size=(LABELS, len(tfidf.ngrams))).astype(np.float32),
                           rng.normal(size=LABELS).astype(np.float32))
    out = tmp_path / f"model-{rng.integers(1 << 30)}.onnx"
    attach(core_graph(tmp_path / "core.onnx"), out, tfidf, linear, weight)
    expected = sigmoid(weight * linear.margins(tfidf.transform(queries)))
    assert np.abs(run_graph(out, queries) - expected).max() < 1e-5


def test_features_match_scikit_learn_tfidf() -> None:
    """transform == TfidfVectorizer(sublinear_tf, smooth idf, l2) over the same n-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = [[CLS, 5, 6, 7, 5, 6, SEP], [CLS, 5, 6, SEP], [CLS, 7, 8, 7, 8, 7, SEP], [CLS, 8, 5, SEP]]
    tfidf = TokenTfidf.fit(train, SPECIAL)
    docs = [" ".join(f"t{t}" for t in seq[1:-1]) for seq in train]
    reference = TfidfVectorizer(analyzer="word", ngram_range=(1, 3), sublinear_tf=True, min_df=2,
                                token_pattern=r"\S+").fit(docs)
    assert len(tfidf.ngrams) == len(reference.vocabulary_)
    ours = tfidf.transform(train).toarray()
    theirs = reference.transform(docs).toarray()
    assert np.allclose(np.sort(ours, axis=1), np.sort(theirs, axis=1))


def test_ngrams_never_span_a_special_token() -> None:
    tfidf = TokenTfidf.fit([[CLS, 5, UNK, 6, SEP], [CLS, 5, UNK, 6, SEP]], SPECIAL)
    assert sorted(tfidf.ngrams) == [(5,), (6,)]


def test_no_shared_ngram_is_an_empty_vocabulary() -> None:
    with pytest.raises(EmptyVocabularyError, match="2"):
        TokenTfidf.fit([[CLS, 5, SEP], [CLS, 6, SEP], [CLS, SEP]], SPECIAL)


def test_a_label_with_one_class_gets_zero_weights() -> None:
    train = [[CLS, 5, 6, SEP], [CLS, 7, 8, SEP]] * 4
    tfidf = TokenTfidf.fit(train, SPECIAL)
    targets = np.array([[1, 0, 0], [0, 1, 0]] * 4, dtype=np.float32)  # label 2 never occurs
    linear = fit_margins(tfidf.transform(train), targets)
    assert not linear.weights[2].any() and linear.intercepts[2] == 0
    margins = linear.margins(tfidf.transform([[CLS, 5, 6, SEP], [CLS, 7, 8, SEP]]))
    assert margins[0].argmax() == 0 and margins[1].argmax() == 1


def test_out_of_fold_margins_come_from_svms_that_never_saw_the_group() -> None:
    """Each group's own token decides its label: in-sample margins know it, out-of-fold ones cannot."""
    train, groups, rows = [], [], []
    for g in range(10):
        label = g % 2
        for _ in range(3):
            train.append([CLS, 3000 + g, 7, SEP])  # token 3000+g only ever occurs in group g
            groups.append(f"p{g}")
            rows.append([1 - label, label])
    targets = np.array(rows, dtype=np.float32)
    lexicon = fit_lexicon(train, targets, groups, SPECIAL, seed=13)
    in_sample = lexicon.linear.margins(lexicon.tfidf.transform(train))
    assert (in_sample.argmax(1) == targets.argmax(1)).all()
    # Out of fold, the deciding token is unknown: every row looks like "7" alone, whatever its label.
    assert np.ptp(lexicon.out_of_fold[:, 1]) < np.ptp(in_sample[:, 1]) / 2


def test_choose_weight_follows_the_validation_rows() -> None:
    rng = np.random.default_rng(0)
    targets = np.eye(LABELS, dtype=np.float32)[rng.integers(0, LABELS, 300)]
    noise = rng.normal(size=targets.shape).astype(np.float32)
    good_margins = (targets * 2 - 1) + 0.3 * noise
    weight, scores = choose_weight(noise, good_margins, targets)
    assert weight > 0 and scores["0"] < scores[f"{weight:g}"]
    weight, _ = choose_weight((targets * 6 - 3) + noise, rng.normal(size=targets.shape) * 3, targets)
    assert weight <= 0.5


def test_attach_refuses_a_graph_without_logits(tmp_path: Path) -> None:
    core = core_graph(tmp_path / "core.onnx")
    model = onnx.load(str(core))
    model.graph.output[1].name = "scores"
    model.graph.node[-1].output[0] = "scores"
    onnx.save(model, str(core))
    with pytest.raises(ValueError, match="logits"):
        attach(core, tmp_path / "out.onnx", None, None, 0.0)


def test_bundle_records_the_branch_it_carries(test_bundle: Path) -> None:
    """The manifest says which weight validation chose among all candidates, and the graph agrees."""
    from export.tfidf_branch import WEIGHT_GRID
    from stream_app.core.bundle import Bundle

    bundle = Bundle.load(test_bundle)
    info = bundle.manifest.training["tfidf_branch"]
    scores = info["validation_macro_f1_by_weight"]
    assert set(scores) == {f"{w:g}" for w in WEIGHT_GRID}
    assert scores[f"{info['weight']:g}"] == max(scores.values())
    assert info["used"] == (info["weight"] != 0) and info["features"] > 0
    ops = {node.op_type for node in onnx.load(str(bundle.model_path)).graph.node}
    assert ("TfIdfVectorizer" in ops) == info["used"]
    assert bundle.manifest.training["result"]["on_tfidf_margins"] is True
