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
    BRANCH_PREFIX,
    EmptyVocabularyError,
    LinearMargins,
    TfidfBranch,
    TokenTfidf,
    attach,
    choose_weight,
    fit_lexicon,
    fit_margins,
    key_base,
)
from stream_app.core.model import ModelOutput, pad_batch
from tests.support.examples import examples

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
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])],
        [onnx.numpy_helper.from_array(np.zeros((1, labels), np.float32), "zeros")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def run_graph(path: Path, ids: list[list[int]], output: str = "probabilities",
              mask: np.ndarray | None = None) -> np.ndarray:
    input_ids, padded_mask = pad_batch(ids, PAD)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([output], {"input_ids": input_ids, "attention_mask": padded_mask if mask is None else mask})[0]


def with_margins_output(path: Path) -> Path:
    """The same graph, also exposing the branch's `tfidf_margins` [B, C] (before the weight's sigmoid)."""
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info("tfidf_margins", TensorProto.FLOAT, None))
    out = path.with_name(path.stem + "-margins.onnx")
    onnx.save(model, str(out))
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


sequences = st.lists(st.integers(2000, 2012), min_size=0, max_size=14).map(lambda s: [CLS, *s, SEP])
# Corpora for the column-by-column comparisons: few distinct ids (so n-grams repeat within and
# across rows: counts > 1, min_df), [UNK] inside the text (an n-gram never spans it), ids far apart
# in the vocabulary (the keys' digits), and empty texts.
piece = st.one_of(st.integers(2000, 2005), st.sampled_from([UNK, 1, 30521]))
texts = st.lists(piece, min_size=0, max_size=20).map(lambda s: [CLS, *s, SEP])
corpora = st.lists(texts, min_size=4, max_size=24)


def reference_analyzer(seq: list[int]) -> list[str]:
    """scikit-learn's own word 1-3 grams, run on each stretch of text between special tokens."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 3), token_pattern=r"\S+", lowercase=False).build_analyzer()
    grams, run = [], []
    for token in [*seq, SEP]:
        if token in SPECIAL:
            grams.extend(words(" ".join(f"t{t}" for t in run)))
            run = []
        else:
            run.append(token)
    return grams


def term(gram: tuple[int, ...]) -> str:
    return " ".join(f"t{t}" for t in gram)


def reference_vectorizer(train: list[list[int]]):
    """TfidfVectorizer (sublinear tf, smooth idf, L2 rows, min_df 2) with scikit-learn's analyzer."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=reference_analyzer, sublinear_tf=True, min_df=2).fit(train)


def random_branch_graph(tmp_path: Path, train: list[list[int]], weight: float
                        ) -> tuple[TokenTfidf, LinearMargins, Path] | None:
    """The TF-IDF of ``train`` with seeded random SVM rows, attached to the core graph at ``weight``
    (None when ``train`` shares no n-gram: an empty vocabulary has no branch to test)."""
    try:
        tfidf = TokenTfidf.fit(train, SPECIAL)
    except EmptyVocabularyError:
        return None
    rng = np.random.default_rng(len(train))
    linear = LinearMargins(rng.normal(size=(LABELS, len(tfidf.ngrams))).astype(np.float32),
                           rng.normal(size=LABELS).astype(np.float32))
    out = tmp_path / f"model-{rng.integers(1 << 30)}.onnx"
    attach(core_graph(tmp_path / "core.onnx"), out, tfidf, linear, weight)
    return tfidf, linear, out


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=st.lists(sequences, min_size=6, max_size=30), queries=st.lists(sequences, min_size=1, max_size=8),
       weight=st.sampled_from([0.5, 1.0, 4.0]))
def test_graph_computes_the_fitted_margins(tmp_path: Path, train, queries, weight) -> None:
    """Repeated n-grams, empty texts and unseen ids: graph output == sigmoid(weight * sklearn margins)."""
    branch = random_branch_graph(tmp_path, train, weight)
    if branch is None:
        return
    tfidf, linear, out = branch
    expected = sigmoid(weight * linear.margins(tfidf.transform(queries)))
    graph = run_graph(out, queries)
    assert np.abs(graph - expected).max() < 1e-5
    # What the build composes from the core graph's outputs (its metrics) is what the graph outputs.
    core = ModelOutput(np.zeros((len(queries), 1), np.float32), np.zeros((len(queries), LABELS), np.float32))
    assert np.abs(TfidfBranch(tfidf, linear, weight, {}).complete(core, queries).probabilities - graph).max() < 1e-5


@settings(max_examples=examples(60), deadline=None)
@given(train=corpora, queries=st.lists(texts, min_size=1, max_size=6))
def test_features_match_scikit_learn_tfidf_column_by_column(train, queries) -> None:
    """Same vocabulary, same idf and the same feature values in every column as TfidfVectorizer
    (sublinear tf, smooth idf, L2 rows) over scikit-learn's own word n-grams."""
    try:
        tfidf = TokenTfidf.fit(train, SPECIAL)
    except EmptyVocabularyError:
        with pytest.raises(ValueError):
            reference_vectorizer(train)
        return
    reference = reference_vectorizer(train)
    columns = [reference.vocabulary_[term(g)] for g in tfidf.ngrams]  # KeyError: an n-gram sklearn lacks
    assert len(columns) == len(reference.vocabulary_)
    assert np.allclose(tfidf.idf, reference.idf_[columns], rtol=1e-12)
    ours = tfidf.transform(train + queries).toarray()
    theirs = reference.transform(train + queries).toarray()[:, columns]
    assert np.abs(ours - theirs).max() < 1e-12


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=corpora, queries=st.lists(texts, min_size=1, max_size=6), labels=st.data())
def test_graph_margins_match_scikit_learn_column_by_column(tmp_path: Path, train, queries, labels) -> None:
    """The graph's margins, label by label and row by row, equal scikit-learn's TfidfVectorizer +
    one LinearSVC per label fitted on the same rows (its own features, its own column order)."""
    from sklearn.svm import LinearSVC

    try:
        tfidf = TokenTfidf.fit(train, SPECIAL)
    except EmptyVocabularyError:
        return
    targets = np.array(labels.draw(st.lists(st.lists(st.booleans(), min_size=LABELS, max_size=LABELS),
                                            min_size=len(train), max_size=len(train))), dtype=np.float32)
    linear = fit_margins(tfidf.transform(train), targets)
    out = tmp_path / f"model-{abs(hash((str(train), str(queries)))) % 10**9}.onnx"
    attach(core_graph(tmp_path / "core.onnx"), out, tfidf, linear, 1.0)
    graph = run_graph(with_margins_output(out), queries, "tfidf_margins")

    reference = reference_vectorizer(train)
    features = reference.transform(train)
    for j in range(LABELS):
        y = targets[:, j] > 0.5
        if y.all() or not y.any():
            assert np.abs(graph[:, j]).max() == 0  # nothing to learn: the branch adds nothing
            continue
        svm = LinearSVC(C=1.0, random_state=13).fit(features, y)
        expected = svm.decision_function(reference.transform(queries))
        assert np.abs(graph[:, j] - expected).max() < 1e-4 * max(1.0, np.abs(expected).max()), j


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=corpora, queries=st.lists(texts, min_size=2, max_size=6), data=st.data())
def test_masked_positions_and_foreign_ids_break_ngrams(tmp_path: Path, train, queries, data) -> None:
    """A position whose attention_mask is 0, or an id no n-gram can hold (negative, or beyond the
    keys' digits), acts as a special token: the margins are those of the text with [SEP] there."""
    branch = random_branch_graph(tmp_path, train, 1.0)
    if branch is None:
        return
    tfidf, linear, out = branch
    input_ids, mask = pad_batch(queries, PAD)
    broken = [list(q) for q in queries]
    for row, seq in enumerate(queries):
        for col in range(len(seq)):
            change = data.draw(st.sampled_from(["keep", "keep", "mask", "negative", "too large"]))
            if change == "keep":
                continue
            broken[row][col] = SEP
            if change == "mask":
                mask[row, col] = 0
            else:
                input_ids[row, col] = -5 if change == "negative" else key_base(tfidf.max_n) - 1
    session = ort.InferenceSession(str(with_margins_output(out)), providers=["CPUExecutionProvider"])
    graph = session.run(["tfidf_margins"], {"input_ids": input_ids, "attention_mask": mask})[0]
    assert np.abs(graph - linear.margins(tfidf.transform(broken))).max() < 1e-5


def test_the_branch_stays_fp32_through_quantization(tmp_path: Path) -> None:
    """The bundle's INT8 pass halves large lookup tables; the branch's tables are never touched."""
    from export.onnx_export import halve_lookup_tables

    train = [[CLS, 2000 + (i * 7) % 11, 2000 + (i * 3) % 5, 2001, SEP] for i in range(30)]
    tfidf = TokenTfidf.fit(train, SPECIAL)
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(LABELS, len(tfidf.ngrams))).astype(np.float32)
    linear = LinearMargins(weights, np.zeros(LABELS, np.float32))
    out = tmp_path / "model.onnx"
    attach(core_graph(tmp_path / "core.onnx"), out, tfidf, linear, 2.0)
    before = run_graph(out, train)
    halve_lookup_tables(out, min_elements=1)
    model = onnx.load(str(out))
    branch = [init for init in model.graph.initializer if init.name.startswith(BRANCH_PREFIX)]
    assert branch and all(init.data_type != TensorProto.FLOAT16 for init in branch)
    assert np.array_equal(run_graph(out, train), before)


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


@settings(max_examples=examples(20), deadline=None)
@given(train=st.lists(texts, min_size=6, max_size=30), data=st.data())
def test_out_of_fold_margins_are_those_of_a_fit_on_the_other_folds(train, data) -> None:
    """fit_lexicon reads the text once (NgramCounts); each fold's margins are still exactly those of
    TokenTfidf.fit on the other folds' rows, SVMs fitted there, applied to the fold's rows."""
    from sklearn.model_selection import GroupKFold

    groups = [f"p{g}" for g in data.draw(st.lists(st.integers(0, 6), min_size=len(train), max_size=len(train)))]
    targets = np.eye(LABELS, dtype=np.float32)[data.draw(st.lists(st.integers(0, LABELS - 1), min_size=len(train),
                                                                 max_size=len(train)))]
    try:
        lexicon = fit_lexicon(train, targets, groups, SPECIAL, seed=13)
    except EmptyVocabularyError:
        return
    whole = TokenTfidf.fit(train, SPECIAL)
    assert whole.ngrams == lexicon.tfidf.ngrams and np.array_equal(whole.idf, lexicon.tfidf.idf)
    if len(set(groups)) < 2:
        assert lexicon.out_of_fold is None
        return
    expected = np.zeros_like(lexicon.out_of_fold)
    for fit_rows, held_rows in GroupKFold(min(5, len(set(groups)))).split(train, groups=groups):
        try:
            fold = TokenTfidf.fit([train[i] for i in fit_rows], SPECIAL)
        except EmptyVocabularyError:
            continue
        linear = fit_margins(fold.transform([train[i] for i in fit_rows]), targets[fit_rows], seed=13)
        expected[held_rows] = linear.margins(fold.transform([train[i] for i in held_rows]))
    assert np.abs(lexicon.out_of_fold - expected).max() < 1e-5


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
    # The default recipe (frozen encoder on top of the out-of-fold margins) gains from the branch.
    assert info["weight"] > 0 and info["used"]
    graph = onnx.load(str(bundle.model_path)).graph
    assert "tfidf_lookup" in {node.name for node in graph.node}
    assert "TfIdfVectorizer" not in {node.op_type for node in graph.node}  # no dense [batch, vocabulary] tensor
    assert bundle.manifest.training["result"]["on_tfidf_margins"] is True
