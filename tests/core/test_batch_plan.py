"""plan_batches: how a sorted micro-batch is cut into model calls. Exact against brute force, never
worse than the fixed cut it replaced, and the categorizer's results keep input order whatever the cut."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_app.core.bundle import Bundle
from stream_app.core.model import CALL_OVERHEAD_TOKENS, OnnxCategorizer, plan_batches
from tests.support.hostile_inputs import FUZZ

sorted_lengths = st.lists(st.integers(1, 128), max_size=40).map(sorted)


def cost(lengths: list[int], plan: list[tuple[int, int]], overhead: float = CALL_OVERHEAD_TOKENS) -> float:
    return sum(overhead + (end - start) * lengths[end - 1] for start, end in plan)


def compositions(count: int, max_rows: int) -> Iterator[list[tuple[int, int]]]:
    """Every cut of range(count) into contiguous calls of 1..max_rows."""
    if count == 0:
        yield []
        return
    for last in range(1, min(max_rows, count) + 1):
        for head in compositions(count - last, max_rows):
            yield [*head, (count - last, count)]


@FUZZ
@given(sorted_lengths, st.integers(1, 12))
def test_the_plan_covers_every_text_once_in_calls_of_at_most_max_rows(lengths: list[int], max_rows: int) -> None:
    plan = plan_batches(lengths, max_rows)
    covered = [i for start, end in plan for i in range(start, end)]
    assert covered == list(range(len(lengths)))
    assert all(1 <= end - start <= max_rows for start, end in plan)


@FUZZ
@given(st.lists(st.integers(1, 64), max_size=9).map(sorted), st.integers(1, 4))
def test_the_plan_is_the_cheapest_cut(lengths: list[int], max_rows: int) -> None:
    cheapest = min(cost(lengths, p) for p in compositions(len(lengths), max_rows))
    assert cost(lengths, plan_batches(lengths, max_rows)) == pytest.approx(cheapest)


@FUZZ
@given(sorted_lengths, st.integers(1, 12))
def test_the_plan_never_costs_more_than_a_cut_every_max_rows(lengths: list[int], max_rows: int) -> None:
    fixed = [(s, min(s + max_rows, len(lengths))) for s in range(0, len(lengths), max_rows)]
    assert cost(lengths, plan_batches(lengths, max_rows)) <= cost(lengths, fixed)


def test_short_texts_are_not_padded_to_a_long_one() -> None:
    # One call of four pads 3 x 55 tokens; a call of the short three and one of the long text pads none.
    assert plan_batches([5, 5, 5, 60], max_rows=8) == [(0, 3), (3, 4)]
    # Equal lengths pad nothing: fill calls up to max_rows to save the per-call cost.
    assert plan_batches([20] * 10, max_rows=8) in ([(0, 8), (8, 10)], [(0, 2), (2, 10)])


def test_max_rows_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        plan_batches([3, 4], max_rows=0)


def test_results_keep_input_order_whatever_the_cut(test_bundle: Path) -> None:
    """Texts of very different lengths, in mixed order: each row of the batched run is that text's own
    result (one call per text), so the cut and the sort never move a row to another text."""
    bundle = Bundle.load(test_bundle)
    model = OnnxCategorizer(bundle.model_path, bundle.tokenizer_path, bundle.manifest.max_tokens, threads=1,
                            batch_size=4)
    texts = ["Colar de prata com pingente de coração e corrente veneziana " * 4, "Caneca", "Kit festa infantil",
             "Quadro decorativo para sala de estar moldura preta " * 3, "Body bebê", "Convite de casamento rústico",
             "Toalha", "Almofada personalizada com nome e foto para presente de dia das mães " * 2]
    together = model.run(texts)
    alone = np.concatenate([model.run([text]).embeddings for text in texts])
    similarity = together.embeddings @ alone.T
    # INT8 activations are quantized per call, so a text's vector moves a little with its batch
    # (cosine > 0.97, the bound the INT8 graph keeps against fp32), but it stays nearest its own.
    assert (similarity.argmax(axis=1) == np.arange(len(texts))).all()
    assert float(np.diag(similarity).min()) > 0.97
