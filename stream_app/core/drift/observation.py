"""What a drift detector sees of one processed message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Observation:
    """One message after inference.

    ``distance``: cosine distance to the nearest centroid (0..2); ``outlier``: ``distance > tau``;
    ``top_index``: label index of the top category; ``partition``/``offset``: where it came from;
    ``event_time``: the event's own time if it had one; ``processed_at``: when the worker scored it.
    """

    product_id: str
    distance: float
    nearest_centroid: int
    outlier: bool
    top_index: int
    partition: int
    offset: int
    event_time: datetime | None
    processed_at: datetime
