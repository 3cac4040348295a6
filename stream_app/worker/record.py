"""`ConsumedRecord`: one consumed message as the batch path sees it (no Faust here: the adapter builds it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class ConsumedRecord:
    """One consumed input message. ``ack()`` marks its offset safe to commit; call it once, in offset order."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None  # broker timestamp, seconds since the epoch
    ack: Callable[[], object]

    @property
    def size(self) -> int:
        """Bytes this record holds (key and value): what memory bounds count."""
        return len(self.key or b"") + len(self.value or b"")
