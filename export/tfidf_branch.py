"""A TF-IDF linear model over token-id n-grams, fitted with scikit-learn, run inside the ONNX graph.

Why: on keyword-heavy catalogs a linear model over n-grams is hard to beat (Elo7: TF-IDF + linear
SVM 0.86 macro-F1, the fine-tuned MiniLM 0.84), and a late average of two separately served models
gains nothing (shared/NOTES.md). Here the n-grams are those of the same WordPiece ids the
transformer reads, so the graph keeps its two inputs and one runtime: ONNX's TfIdfVectorizer
operator counts the n-grams and a few elementwise ops reproduce scikit-learn's sublinear tf, smooth
idf and L2 row norm exactly. The transformer's logits and the linear margins add up, with one
weight chosen on the validation split (`choose_weight`).

Contract:
- `TokenTfidf.fit(ids)` learns the n-grams of 1..max_n ids that occur in at least min_df training
  sequences (never spanning a special token such as [CLS], [SEP] or [PAD]) and their idf;
  `transform(ids)` gives the CSR matrix [N, F] that the graph computes from the same ids.
- `fit_margins(features, targets)`: one-vs-rest linear SVMs, weights [C, F] and intercepts [C];
  a label with one class only in training gets zeros (it cannot be learned, it adds nothing).
- `fit_lexicon(train, ...)`: all of the above on the train split, plus out-of-fold margins for its
  rows (grouped folds), which the transformer trains on top of (`export.model.joint_loss`).
- `choose_branch(core, ...)`: the weight, chosen on the validation split from `WEIGHT_GRID`.
- `attach(core, out, ...)`: takes an exported graph with outputs `embedding` and `logits` and
  writes one with `embedding` and `probabilities = sigmoid(logits + weight * margins)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

MAX_N = 3  # piece 1-3 grams: validation macro-F1 0.862 vs 0.852 for 1-2 (Elo7, LinearSVC C=1)
MIN_DF = 2
SVM_C = 1.0
WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 64.0)
# Hinge-loss margins sit near +-1, where a logit means p ~ 0.73: while the transformer trains on top
# of them they are scaled to logit size (p ~ 0.95 at the margin), so that BCE does not push the
# transformer to supply confidence the margins already carry.
TRAINING_MARGIN_SCALE = 3.0
OUT_OF_FOLD_FOLDS = 5
TFIDF_CHECKPOINT_FILE = "tfidf_branch.pkl"  # beside a --torch-checkpoint, for the naive PyTorch benchmark
MARGINS_MATMUL = "tfidf_margins_matmul"  # kept fp32 by the quantizer: it is tiny and sparse


class EmptyVocabularyError(ValueError):
    """No n-gram reaches min_df: there is nothing for the branch to learn from."""


def _runs(seq: Sequence[int], special: frozenset[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    current: list[int] = []
    for token in seq:
        if token in special:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(int(token))
    if current:
        runs.append(current)
    return runs


@dataclass
class TokenTfidf:
    """Vocabulary of id n-grams (column order) and their smooth idf, as scikit-learn computes it."""

    ngrams: list[tuple[int, ...]]
    idf: np.ndarray  # float64 [F]
    special: frozenset[int]
    max_n: int = MAX_N

    def analyze(self, seq: Sequence[int]) -> list[tuple[int, ...]]:
        return _analyze(seq, self.special, self.max_n)

    @classmethod
    def fit(cls, ids: Sequence[Sequence[int]], special: set[int], max_n: int = MAX_N, min_df: int = MIN_DF) -> TokenTfidf:
        from sklearn.feature_extraction.text import TfidfVectorizer

        frozen = frozenset(special)
        vectorizer = TfidfVectorizer(analyzer=lambda seq: _analyze(seq, frozen, max_n), sublinear_tf=True,
                                     min_df=min_df, lowercase=False)
        try:
            vectorizer.fit(ids)
        except ValueError as exc:  # scikit-learn: "empty vocabulary" / "max_df corresponds to < documents than min_df"
            raise EmptyVocabularyError(f"no token n-gram occurs in {min_df}+ training rows ({exc})") from exc
        columns = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)  # n-gram of column j
        return cls(columns, vectorizer.idf_, frozen, max_n)

    def transform(self, ids: Sequence[Sequence[int]]) -> sparse.csr_matrix:
        """Sublinear tf * idf, L2-normalized rows: exactly what `attach` computes in the graph."""
        column = {g: j for j, g in enumerate(self.ngrams)}
        rows, cols, vals = [], [], []
        for r, seq in enumerate(ids):
            counts: dict[int, int] = {}
            for gram in self.analyze(seq):
                j = column.get(gram)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            js = np.fromiter(counts, dtype=np.int64)
            values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * self.idf[js]
            values /= np.linalg.norm(values)
            rows.extend([r] * len(js))
            cols.extend(js.tolist())
            vals.extend(values.tolist())
        return sparse.csr_matrix((vals, (rows, cols)), shape=(len(ids), len(self.ngrams)))


def _analyze(seq: Sequence[int], special: frozenset[int], max_n: int) -> list[tuple[int, ...]]:
    grams: list[tuple[int, ...]] = []
    for run in _runs(seq, special):
        for n in range(1, max_n + 1):
            grams.extend(tuple(run[i : i + n]) for i in range(len(run) - n + 1))
    return grams


@dataclass
class LinearMargins:
    weights: np.ndarray  # float32 [C, F]
    intercepts: np.ndarray  # float32 [C]

    def margins(self, features: sparse.csr_matrix) -> np.ndarray:
        return np.asarray(features @ self.weights.T, dtype=np.float32) + self.intercepts


def fit_margins(features: sparse.csr_matrix, targets: np.ndarray, c: float = SVM_C, seed: int = 13) -> LinearMargins:
    """One linear SVM per label (one-vs-rest) on the TF-IDF features; targets is a 0/1 matrix [N, C]."""
    from sklearn.svm import LinearSVC

    num_labels = targets.shape[1]
    weights = np.zeros((num_labels, features.shape[1]), dtype=np.float32)
    intercepts = np.zeros(num_labels, dtype=np.float32)
    for j in range(num_labels):
        y = targets[:, j] > 0.5
        if y.all() or not y.any():
            continue
        svm = LinearSVC(C=c, random_state=seed).fit(features, y)
        weights[j] = svm.coef_[0]
        intercepts[j] = svm.intercept_[0]
    return LinearMargins(weights, intercepts)


def choose_weight(logits: np.ndarray, margins: np.ndarray, targets: np.ndarray,
                  grid: Sequence[float] = WEIGHT_GRID) -> tuple[float, dict[str, float]]:
    """The weight on the margins with the best validation macro-F1 of the thresholded decision.

    Every candidate gets its own per-category thresholds (tuned on the same rows, as the build
    does), so the comparison is between the decisions the bundle would actually make. Ties go to
    the smaller weight (the transformer alone is the simpler model).
    """
    from export.metrics import macro_f1
    from export.thresholds import tune_thresholds
    from stream_app.core.decoding import decision_matrix

    scores: dict[str, float] = {}
    best, best_score = grid[0], -1.0
    truth = targets > 0.5
    for weight in grid:
        probabilities = 0.5 * (1.0 + np.tanh(0.5 * (logits + weight * margins)))  # sigmoid without overflow
        thresholds = tune_thresholds(probabilities, truth)
        value = macro_f1(truth, decision_matrix(probabilities, thresholds))
        scores[f"{weight:g}"] = round(value, 4)
        if value > best_score + 1e-9:
            best, best_score = weight, value
    return best, scores


def attach(core: Path, out: Path, tfidf: TokenTfidf | None, linear: LinearMargins | None, weight: float) -> None:
    """Write `out`: `core` (outputs embedding, logits) + TF-IDF margins + sigmoid -> probabilities.

    With weight 0 (or no branch) only the sigmoid is added, so the graph carries no dead weights.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(core))
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    if set(outputs) != {"embedding", "logits"}:
        raise ValueError(f"{core}: expected outputs embedding and logits, found {sorted(outputs)}")
    logits_name = "logits"
    if tfidf is not None and linear is not None and weight != 0.0:
        pool: list[int] = []
        counts: list[int] = []
        indexes: list[int] = []
        for n in range(1, tfidf.max_n + 1):
            counts.append(len(pool))
            for j, gram in enumerate(tfidf.ngrams):
                if len(gram) == n:
                    pool.extend(gram)
                    indexes.append(j)
        constants = {
            "tfidf_one": np.array(1.0, np.float32),
            "tfidf_eps": np.array(1e-12, np.float32),
            "tfidf_idf": tfidf.idf.astype(np.float32),
            "tfidf_weights": (weight * linear.weights.T).astype(np.float32),  # [F, C]
            "tfidf_intercepts": (weight * linear.intercepts).astype(np.float32),
        }
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
        graph.node.extend([
            helper.make_node("TfIdfVectorizer", ["input_ids"], ["tfidf_counts"], name="tfidf_counts", mode="TF",
                             min_gram_length=1, max_gram_length=tfidf.max_n, max_skip_count=0,
                             ngram_counts=counts, ngram_indexes=indexes, pool_int64s=pool),
            # sublinear tf without log(0): log(max(c, 1)) + min(c, 1) is 1 + log c for c >= 1, else 0
            helper.make_node("Max", ["tfidf_counts", "tfidf_one"], ["tfidf_at_least_one"]),
            helper.make_node("Log", ["tfidf_at_least_one"], ["tfidf_log"]),
            helper.make_node("Min", ["tfidf_counts", "tfidf_one"], ["tfidf_present"]),
            helper.make_node("Add", ["tfidf_log", "tfidf_present"], ["tfidf_sublinear"]),
            helper.make_node("Mul", ["tfidf_sublinear", "tfidf_idf"], ["tfidf_raw"]),
            helper.make_node("ReduceL2", ["tfidf_raw"], ["tfidf_norm"], axes=[1], keepdims=1),
            helper.make_node("Max", ["tfidf_norm", "tfidf_eps"], ["tfidf_norm_safe"]),
            helper.make_node("Div", ["tfidf_raw", "tfidf_norm_safe"], ["tfidf_features"]),
            helper.make_node("MatMul", ["tfidf_features", "tfidf_weights"], ["tfidf_matmul"], name=MARGINS_MATMUL),
            helper.make_node("Add", ["tfidf_matmul", "tfidf_intercepts"], ["tfidf_margins"]),
            helper.make_node("Add", ["logits", "tfidf_margins"], ["combined_logits"]),
        ])
        logits_name = "combined_logits"
    graph.node.append(helper.make_node("Sigmoid", [logits_name], ["probabilities"]))
    logits_info = outputs["logits"]
    labels_dim = logits_info.type.tensor_type.shape.dim[1]
    graph.output.remove(logits_info)
    graph.output.append(helper.make_tensor_value_info(
        "probabilities", TensorProto.FLOAT, ["batch", labels_dim.dim_value or labels_dim.dim_param]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


@dataclass
class TfidfBranch:
    """The fitted branch as the build uses it: features, margins, weight, and what was measured."""

    tfidf: TokenTfidf | None
    linear: LinearMargins | None
    weight: float
    validation_macro_f1: dict[str, float]
    note: str = ""

    @classmethod
    def off(cls, reason: str) -> TfidfBranch:
        return cls(None, None, 0.0, {}, reason)

    @property
    def used(self) -> bool:
        return self.tfidf is not None and self.linear is not None and self.weight != 0.0

    def extra_logits(self, ids: Sequence[Sequence[int]]) -> np.ndarray | None:
        """What the graph adds to the transformer's logits for these rows (None when unused)."""
        if not self.used:
            return None
        return self.weight * self.linear.margins(self.tfidf.transform(ids))

    def save(self, path: Path) -> None:
        """Pickle the branch beside a PyTorch checkpoint (a local build artifact, never loaded by the worker)."""
        import pickle

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(self))

    @staticmethod
    def load(path: Path) -> TfidfBranch:
        import pickle

        return pickle.loads(path.read_bytes())

    def describe(self) -> dict:
        return {
            "used": self.used,
            "features": len(self.tfidf.ngrams) if self.tfidf is not None else 0,
            "max_n": self.tfidf.max_n if self.tfidf is not None else None,
            "min_df": MIN_DF,
            "svm_c": SVM_C,
            "weight": self.weight,
            "validation_macro_f1_by_weight": self.validation_macro_f1,
            "note": self.note,
        }


def special_ids(tokenizer_path: Path) -> set[int]:
    """[CLS], [SEP], [PAD], [UNK], [MASK] and the like: n-grams never span them."""
    from tokenizers import Tokenizer

    added = Tokenizer.from_file(str(tokenizer_path)).get_added_tokens_decoder()
    return {int(i) for i, token in added.items() if token.special}


@dataclass
class FittedLexicon:
    """The TF-IDF features and SVMs fitted on the whole train split, and honest margins for its rows."""

    tfidf: TokenTfidf
    linear: LinearMargins
    out_of_fold: np.ndarray | None  # float32 [len(train), C]: each row's margins from SVMs that never saw its group


def fit_lexicon(train: Sequence[Sequence[int]], targets: np.ndarray, groups: Sequence[str], special: set[int],
                seed: int, folds: int = OUT_OF_FOLD_FOLDS, out_of_fold: bool = True) -> FittedLexicon:
    """Fit on all of `train`; also refit per group fold for out-of-fold margins (None when
    `out_of_fold` is False, since a re-export of trained weights does not need them, or when there
    are fewer than two groups to fold).

    The transformer trains on top of the margins (its logits are added to them), so the margins it
    sees while training must be those of rows the SVMs did not fit: in-sample margins are
    overconfident and would teach the transformer to lean on them. Folds are grouped (a product's
    rows stay together), as the splits are. Raises EmptyVocabularyError when no n-gram reaches min_df.
    """
    from sklearn.model_selection import GroupKFold

    tfidf = TokenTfidf.fit(train, special)
    linear = fit_margins(tfidf.transform(train), targets, seed=seed)
    n_groups = len(set(groups))
    if n_groups < 2 or not out_of_fold:
        return FittedLexicon(tfidf, linear, None)
    margins = np.zeros(targets.shape, dtype=np.float32)
    for fit_rows, held_rows in GroupKFold(min(folds, n_groups)).split(train, groups=list(groups)):
        fold_train = [train[i] for i in fit_rows]
        try:
            fold_tfidf = TokenTfidf.fit(fold_train, special)
        except EmptyVocabularyError:
            continue  # this fold has nothing to learn from: its rows keep zero margins
        fold_linear = fit_margins(fold_tfidf.transform(fold_train), targets[fit_rows], seed=seed)
        margins[held_rows] = fold_linear.margins(fold_tfidf.transform([train[i] for i in held_rows]))
    return FittedLexicon(tfidf, linear, margins)


def choose_branch(core: Path, tokenizer_path: Path, max_tokens: int, lexicon: FittedLexicon,
                  validation: Sequence[Sequence[int]], targets: np.ndarray) -> TfidfBranch:
    """Run the exported core graph on the validation rows and pick the margins' weight there."""
    from stream_app.core.model import Categorizer

    core_model = Categorizer(core, tokenizer_path, max_tokens, outputs=("embedding", "logits"))
    logits = core_model.run_ids(validation).probabilities
    margins = lexicon.linear.margins(lexicon.tfidf.transform(validation))
    weight, scores = choose_weight(logits, margins, targets)
    return TfidfBranch(lexicon.tfidf, lexicon.linear, weight, scores)
