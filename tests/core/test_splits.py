"""Grouped splits (`stream_app.core.splits`): a product never sits on two sides, whatever the order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream_app.core.splits import SplitSpec, side_of, split_indices


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=50), st.integers(0, 100))
def test_split_is_grouped_and_deterministic(groups: list[str], seed: int) -> None:
    spec = SplitSpec(seed=seed)
    sides = split_indices(groups, spec)
    assert sorted(i for rows in sides.values() for i in rows) == list(range(len(groups)))
    for side, rows in sides.items():
        assert all(side_of(groups[i], spec) == side for i in rows)  # a product never sits on two sides
    assert split_indices(list(reversed(groups)), spec)["test"] == sorted(len(groups) - 1 - i for i in sides["test"])
