"""Deterministic train / validation / test split, grouped by product id.

Contract: the split of a row depends only on (seed, group id), never on row order or on the other
rows, so the same product always lands on the same side, across runs and across files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitSpec:
    seed: int = 13
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.validation < 1 and 0 < self.test < 1 and self.validation + self.test < 1):
            raise ValueError(
                f"split fractions validation={self.validation} test={self.test} must be in (0, 1) and sum < 1"
            )


def side_of(group: str, spec: SplitSpec) -> str:
    """'train', 'validation' or 'test' for a group id."""
    digest = hashlib.blake2b(f"{spec.seed}:{group}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < spec.test:
        return "test"
    if u < spec.test + spec.validation:
        return "validation"
    return "train"


def split_indices(groups: list[str], spec: SplitSpec) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for i, group in enumerate(groups):
        out[side_of(group, spec)].append(i)
    return out
