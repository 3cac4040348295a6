"""What a drift detector sees of one input partition: scored messages, window ends and rewinds.

A detector is fed, in offset order, one ``Observation`` per scored message of its partition, a
``WindowEnd`` when the driver closes an aligned window ``[k*W, (k+1)*W)`` (what the windowed tests
judge) and a ``Rewind`` when the partition jumps back (a replay: what was counted of the open window
or run will come again). Dead letters bring nothing: they only occupy offsets of the window.
"""

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


@dataclass(frozen=True, slots=True)
class WindowEnd:
    """The aligned window ``[start_offset, end_offset)`` is over: the windowed tests judge it now.

    It comes after the window's last offset, or before the first observation of a later window when
    the window's tail was never delivered (consumed elsewhere).
    """

    start_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class Rewind:
    """The partition jumped back: forget the open window's counts and any running statistic (the
    replay brings those observations again); an episode's memory (streak, firing window) stays."""


REWIND = Rewind()
