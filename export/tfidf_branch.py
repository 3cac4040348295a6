"""A TF-IDF linear model over token-id n-grams, fitted with scikit-learn, run inside the ONNX graph.

Why: on keyword-heavy catalogs a linear model over n-grams is hard to beat (Elo7: TF-IDF + linear
SVM 0.86 macro-F1, the fine-tuned MiniLM 0.84), and a late average of two separately served models
gains nothing (shared/NOTES.md). Here the n-grams are those of the same WordPiece ids the
transformer reads, so the graph keeps its two inputs and one runtime. In the graph the branch
costs what the n-grams present cost (`branch_nodes`): their keys are looked up in a hash table
(LabelEncoder), the rows of the SVM weights they hit are gathered (idf and the branch weight folded
in at build time), and scikit-learn's sublinear tf, smooth idf and L2 row norm are reproduced
exactly over those few positions; no [batch, vocabulary] tensor is ever made (ONNX's TfIdfVectorizer
did that, and the dense elementwise ops after it cost 10-25% of the whole graph). The
transformer's logits and the linear margins add up, with one weight chosen on the validation split
(`choose_weight`).

Contract:
- `TokenTfidf.fit(ids)` learns the n-grams of 1..max_n ids that occur in at least min_df training
  sequences (never spanning a special token such as [CLS], [SEP] or [PAD]) and their idf;
  `transform(ids)` gives the CSR matrix [N, F] that the graph computes from the same ids.
- `fit_margins(features, targets)`: one-vs-rest linear SVMs, weights [C, F] and intercepts [C];
  a label with one class only in training gets zeros (it cannot be learned, it adds nothing).
- `fit_lexicon(train, ...)`: all of the above on the train split, plus out-of-fold margins for its
  rows (grouped folds), which the transformer trains on top of (`export.model.joint_loss`).
- `choose_branch(lexicon, logits, ...)`: the weight, chosen on the validation split from `WEIGHT_GRID`
  given the exported core graph's logits there.
- `attach(core, out, ...)`: takes an exported graph with outputs `embedding` and `logits` and
  writes one with `embedding` and `probabilities = sigmoid(logits + weight * margins)`; the
  branch's nodes and constants are all named `tfidf_*`, its output `tfidf_margins`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from onnx import NodeProto

    from stream_app.core.model import ModelOutput

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
MARGINS_MATMUL = "tfidf_margins_matmul"  # kept fp32 by the quantizer: a few gathered rows per text
BRANCH_PREFIX = "tfidf_"  # every node and constant of the branch (the quantizer leaves them fp32)


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
    def fit(cls, ids: Sequence[Sequence[int]], special: set[int], max_n: int = MAX_N,
            min_df: int = MIN_DF) -> TokenTfidf:
        """TfidfVectorizer(analyzer=n-grams, sublinear_tf, min_df).fit(ids): same columns, same idf."""
        frozen = frozenset(special)
        counts = NgramCounts.of(ids, frozen, max_n)
        columns, idf = counts.vocabulary(min_df=min_df)
        return cls([counts.grams[j] for j in columns], idf, frozen, max_n)

    def transform(self, ids: Sequence[Sequence[int]]) -> sparse.csr_matrix:
        """Sublinear tf * idf, L2-normalized rows: exactly what `attach` computes in the graph."""
        column = {g: j for j, g in enumerate(self.ngrams)}
        indptr, cols = [0], []
        for seq in ids:
            cols.extend(j for j in map(column.get, self.analyze(seq)) if j is not None)
            indptr.append(len(cols))
        counts = sparse.csr_matrix((np.ones(len(cols), np.int64), np.asarray(cols, np.int64), np.asarray(indptr)),
                                   shape=(len(ids), len(self.ngrams)))
        counts.sum_duplicates()
        return _weigh(counts, self.idf)


@dataclass
class NgramCounts:
    """Every n-gram of some rows, counted in one pass over them; a TF-IDF fit and the features of
    any subset of those rows are then sparse algebra (the out-of-fold fits read the text once)."""

    grams: list[tuple[int, ...]]  # sorted, as scikit-learn orders its vocabulary
    counts: sparse.csr_matrix  # int64 [N, G], occurrences of gram j in row i

    @classmethod
    def of(cls, ids: Sequence[Sequence[int]], special: frozenset[int], max_n: int = MAX_N) -> NgramCounts:
        index: dict[tuple[int, ...], int] = {}
        indptr, cols = [0], []
        for seq in ids:
            cols.extend(index.setdefault(gram, len(index)) for gram in _analyze(seq, special, max_n))
            indptr.append(len(cols))
        grams = list(index)
        order = sorted(range(len(grams)), key=grams.__getitem__)
        rank = np.empty(len(grams), np.int64)
        rank[order] = np.arange(len(grams))
        counts = sparse.csr_matrix((np.ones(len(cols), np.int64), rank[np.asarray(cols, np.int64)], np.asarray(indptr)),
                                   shape=(len(ids), len(grams)))
        counts.sum_duplicates()
        return cls([grams[i] for i in order], counts)

    def vocabulary(self, rows: Sequence[int] | None = None, min_df: int = MIN_DF) -> tuple[np.ndarray, np.ndarray]:
        """(columns whose n-gram occurs in min_df+ of `rows`, their smooth idf): TfidfVectorizer.fit's."""
        counts = self.counts if rows is None else self.counts[np.asarray(rows)]
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        columns = np.flatnonzero(df >= min_df)
        if columns.size == 0:
            raise EmptyVocabularyError(f"no token n-gram occurs in {min_df}+ training rows ({counts.shape[0]} rows)")
        return columns, np.log((1 + counts.shape[0]) / (1 + df[columns])) + 1.0

    def features(self, columns: np.ndarray, idf: np.ndarray, rows: Sequence[int] | None = None) -> sparse.csr_matrix:
        """The TF-IDF rows of `rows` over the vocabulary (`columns`, `idf`) of `vocabulary`."""
        counts = self.counts if rows is None else self.counts[np.asarray(rows)]
        return _weigh(counts[:, columns], idf)


def _weigh(counts: sparse.csr_matrix, idf: np.ndarray) -> sparse.csr_matrix:
    """TfidfTransformer(sublinear_tf=True, norm="l2") of a count matrix, the same operations in order."""
    from sklearn.preprocessing import normalize

    features = counts.astype(np.float64)
    np.log(features.data, features.data)
    features.data += 1.0
    features.data *= idf[features.indices]
    return normalize(features, norm="l2", copy=False)


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


def key_base(max_n: int) -> int:
    """Base of the n-gram keys: keys of up to max_n digits (plus their offsets) fit in int64."""
    return 2 ** min(31, 62 // max_n)


def ngram_key(gram: Sequence[int], base: int) -> int:
    """The int64 key the graph computes for an n-gram: digits id + 1 in `base`, offset by length.

    A digit is 0 where the graph saw a position outside the text (padding, masked, or an id that
    cannot be a digit), so such windows never match; the offset (the keys of all shorter grams)
    keeps an n-gram with leading 0 digits from matching a shorter one.
    """
    key = 0
    for token in gram:
        key = key * base + int(token) + 1
    return key + sum(base**m for m in range(1, len(gram)))


def attach(core: Path, out: Path, tfidf: TokenTfidf | None, linear: LinearMargins | None, weight: float) -> None:
    """Write `out`: `core` (outputs embedding, logits) + TF-IDF margins + sigmoid -> probabilities.

    With weight 0 (or no branch) only the sigmoid is added, so the graph carries no dead weights.
    The branch costs what the n-grams present cost, never [batch, features] (`branch_nodes`).
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
        nodes, constants = branch_nodes(tfidf, linear, weight)
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
        graph.node.extend([*nodes, helper.make_node("Add", ["logits", "tfidf_margins"], ["combined_logits"])])
        if not any(o.domain == ML_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
        logits_name = "combined_logits"
    graph.node.append(helper.make_node("Sigmoid", [logits_name], ["probabilities"]))
    logits_info = outputs["logits"]
    labels_dim = logits_info.type.tensor_type.shape.dim[1]
    graph.output.remove(logits_info)
    graph.output.append(helper.make_tensor_value_info(
        "probabilities", TensorProto.FLOAT, ["batch", labels_dim.dim_value or labels_dim.dim_param]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 2  # LabelEncoder-2: int64 keys -> int64 values


def branch_nodes(tfidf: TokenTfidf, linear: LinearMargins, weight: float) -> tuple[list, dict[str, np.ndarray]]:
    """ONNX nodes (input_ids, attention_mask -> `tfidf_margins` [B, C]) and their constants.

    A gather over the n-grams present, never a [B, F] tensor:

    1. digits d = id + 1 where attention_mask is set and 0 <= id < base - 1, else 0; the key of
       the n-gram starting at position i is `ngram_key` of d[i : i + n], for n = 1..max_n
       ([B, ~max_n * S] int64 keys);
    2. LabelEncoder maps a key to its column + 1 (0: not in the vocabulary, or not a valid window:
       a key with a 0 digit is in no table, so n-grams never span padding or masked positions, and
       special ids never occur in a vocabulary n-gram, as `TokenTfidf.fit` excludes them);
    3. count c of each key within its row (an [S, S] equality per n-gram length: S <= max tokens);
    4. per position, with tf = 1 + log c: |x|^2 = sum (tf * idf)^2 / c and the margins
       sum (tf / c) * W'[column] / |x| + b', where W' = weight * idf * SVM weights (folded at
       build time, row 0 all zeros) and b' = weight * intercepts: each distinct n-gram's c
       positions add up to its one term of scikit-learn's sum.
    """
    from onnx import TensorProto, helper

    base = key_base(tfidf.max_n)
    features, labels = len(tfidf.ngrams), linear.weights.shape[0]
    if tfidf.ngrams and max(max(g) for g in tfidf.ngrams) >= base - 1:
        raise ValueError(f"token id {max(max(g) for g in tfidf.ngrams)} too large for {tfidf.max_n}-gram keys "
                         f"(< {base - 1})")
    idf = np.concatenate([[0.0], tfidf.idf]).astype(np.float32)
    folded = np.zeros((features + 1, labels), dtype=np.float32)
    folded[1:] = (weight * tfidf.idf[:, None] * linear.weights.T.astype(np.float64)).astype(np.float32)
    constants = {
        "tfidf_one_int": np.array(1, np.int64),
        "tfidf_zero_int": np.array(0, np.int64),
        "tfidf_digit_limit": np.array(base - 1, np.int64),
        "tfidf_base": np.array(base, np.int64),
        "tfidf_axis1": np.array([1], np.int64),
        "tfidf_axis2": np.array([2], np.int64),
        "tfidf_start0": np.array([0], np.int64),
        "tfidf_end_last": np.array([-1], np.int64),
        "tfidf_end": np.array([np.iinfo(np.int64).max], np.int64),
        "tfidf_one": np.array(1.0, np.float32),
        "tfidf_eps": np.array(1e-12, np.float32),
        "tfidf_idf": idf,  # [F + 1], row 0 for "no column"
        "tfidf_weights": folded,  # [F + 1, C]
        "tfidf_intercepts": (weight * linear.intercepts.astype(np.float64)).astype(np.float32),
    }
    def node(op: str, inputs: list[str], outputs: list[str], name: str | None = None,
             **attributes: Any) -> NodeProto:
        return helper.make_node(op, inputs, outputs, name=name or outputs[0], **attributes)

    nodes = [
        node("GreaterOrEqual", ["input_ids", "tfidf_zero_int"], ["tfidf_id_nonnegative"]),
        node("Less", ["input_ids", "tfidf_digit_limit"], ["tfidf_id_below_limit"]),
        node("Cast", ["attention_mask"], ["tfidf_attended"], to=TensorProto.BOOL),
        node("And", ["tfidf_id_nonnegative", "tfidf_id_below_limit"], ["tfidf_id_in_range"]),
        node("And", ["tfidf_id_in_range", "tfidf_attended"], ["tfidf_is_digit"]),
        node("Add", ["input_ids", "tfidf_one_int"], ["tfidf_id_plus_one"]),
        node("Where", ["tfidf_is_digit", "tfidf_id_plus_one", "tfidf_zero_int"], ["tfidf_digits"]),
    ]
    keys, counts = [], []
    previous = "tfidf_digits"  # the n-gram number without offset: n digits in base `base`
    for n in range(1, tfidf.max_n + 1):
        if n > 1:
            constants[f"tfidf_start{n - 1}"] = np.array([n - 1], np.int64)
            constants[f"tfidf_offset{n}"] = np.array(sum(base**m for m in range(1, n)), np.int64)
            nodes += [
                node("Slice", [previous, "tfidf_start0", "tfidf_end_last", "tfidf_axis1"], [f"tfidf_head{n}"]),
                node("Slice", ["tfidf_digits", f"tfidf_start{n - 1}", "tfidf_end", "tfidf_axis1"], [f"tfidf_tail{n}"]),
                node("Mul", [f"tfidf_head{n}", "tfidf_base"], [f"tfidf_shifted{n}"]),
                node("Add", [f"tfidf_shifted{n}", f"tfidf_tail{n}"], [f"tfidf_number{n}"]),
                node("Add", [f"tfidf_number{n}", f"tfidf_offset{n}"], [f"tfidf_keys{n}"]),
            ]
            previous = f"tfidf_number{n}"
        key = "tfidf_digits" if n == 1 else f"tfidf_keys{n}"
        nodes += [  # occurrences of each key in its row: [B, S_n, S_n] equality, summed
            node("Unsqueeze", [key, "tfidf_axis2"], [f"tfidf_rows{n}"]),
            node("Unsqueeze", [key, "tfidf_axis1"], [f"tfidf_columns{n}"]),
            node("Equal", [f"tfidf_rows{n}", f"tfidf_columns{n}"], [f"tfidf_same{n}"]),
            node("Cast", [f"tfidf_same{n}"], [f"tfidf_same_float{n}"], to=TensorProto.FLOAT),
            node("ReduceSum", [f"tfidf_same_float{n}", "tfidf_axis2"], [f"tfidf_count{n}"], keepdims=0),
        ]
        keys.append(key)
        counts.append(f"tfidf_count{n}")
    table = [ngram_key(g, base) for g in tfidf.ngrams]
    nodes += [
        node("Concat", keys, ["tfidf_keys"], axis=1),
        node("Concat", counts, ["tfidf_count"], axis=1),
        node("LabelEncoder", ["tfidf_keys"], ["tfidf_columns"], name="tfidf_lookup", domain=ML_DOMAIN,
             keys_int64s=table, values_int64s=list(range(1, features + 1)), default_int64=0),
        node("Log", ["tfidf_count"], ["tfidf_log_count"]),
        node("Add", ["tfidf_log_count", "tfidf_one"], ["tfidf_tf"]),
        node("Div", ["tfidf_tf", "tfidf_count"], ["tfidf_share"]),  # tf / c: c positions make one term
        node("Gather", ["tfidf_idf", "tfidf_columns"], ["tfidf_idf_at"], name="tfidf_idf_lookup"),
        node("Mul", ["tfidf_tf", "tfidf_idf_at"], ["tfidf_value"]),
        node("Mul", ["tfidf_value", "tfidf_value"], ["tfidf_value_squared"]),
        node("Div", ["tfidf_value_squared", "tfidf_count"], ["tfidf_value_squared_share"]),
        node("ReduceSum", ["tfidf_value_squared_share", "tfidf_axis1"], ["tfidf_norm_squared"], keepdims=1),
        node("Sqrt", ["tfidf_norm_squared"], ["tfidf_norm"]),
        node("Max", ["tfidf_norm", "tfidf_eps"], ["tfidf_norm_safe"]),
        node("Gather", ["tfidf_weights", "tfidf_columns"], ["tfidf_weights_at"], name="tfidf_weights_lookup"),
        node("Unsqueeze", ["tfidf_share", "tfidf_axis1"], ["tfidf_share_row"]),
        node("MatMul", ["tfidf_share_row", "tfidf_weights_at"], ["tfidf_summed"], name=MARGINS_MATMUL),  # [B, 1, C]
        node("Squeeze", ["tfidf_summed", "tfidf_axis1"], ["tfidf_unnormalized"]),
        node("Div", ["tfidf_unnormalized", "tfidf_norm_safe"], ["tfidf_scaled"]),
        node("Add", ["tfidf_scaled", "tfidf_intercepts"], ["tfidf_margins"]),
    ]
    return nodes, constants


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

    def complete(self, core: ModelOutput, ids: Sequence[Sequence[int]]) -> ModelOutput:
        """What `attach`'s graph outputs for these rows, from its core graph's (embedding, logits)."""
        from stream_app.core.model import ModelOutput

        extra = self.extra_logits(ids)
        logits = core.probabilities if extra is None else core.probabilities + extra
        return ModelOutput(core.embeddings, (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32))

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

    frozen = frozenset(special)
    counts = NgramCounts.of(train, frozen)  # the text is read once; every fit below is sparse algebra
    columns, idf = counts.vocabulary()
    tfidf = TokenTfidf([counts.grams[j] for j in columns], idf, frozen)
    linear = fit_margins(counts.features(columns, idf), targets, seed=seed)
    n_groups = len(set(groups))
    if n_groups < 2 or not out_of_fold:
        return FittedLexicon(tfidf, linear, None)
    margins = np.zeros(targets.shape, dtype=np.float32)
    for fit_rows, held_rows in GroupKFold(min(folds, n_groups)).split(train, groups=list(groups)):
        try:  # the fold's own vocabulary and idf, as TokenTfidf.fit on its rows would learn them
            fold_columns, fold_idf = counts.vocabulary(fit_rows)
        except EmptyVocabularyError:
            continue  # this fold has nothing to learn from: its rows keep zero margins
        fold_linear = fit_margins(counts.features(fold_columns, fold_idf, fit_rows), targets[fit_rows], seed=seed)
        margins[held_rows] = fold_linear.margins(counts.features(fold_columns, fold_idf, held_rows))
    return FittedLexicon(tfidf, linear, margins)


def choose_branch(lexicon: FittedLexicon, logits: np.ndarray, validation: Sequence[Sequence[int]],
                  targets: np.ndarray) -> TfidfBranch:
    """Pick the margins' weight on the validation rows, given the exported core graph's logits there."""
    margins = lexicon.linear.margins(lexicon.tfidf.transform(validation))
    weight, scores = choose_weight(logits, margins, targets)
    return TfidfBranch(lexicon.tfidf, lexicon.linear, weight, scores)
