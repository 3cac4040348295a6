"""The driver's view of an aligned window of one partition while it fills (``monitor``).

Windows are aligned to offsets: window k of a partition covers offsets ``[k*W, (k+1)*W)``.
`OpenWindow` is what has been seen of one such window (offsets, dead letters, times): what a record
says of its window (``snapshot``). The detectors never see it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from stream_app.core.drift.alerts import AlertWindow
from stream_app.core.drift.observation import Observation


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so naive and aware times of one window compare."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class OpenWindow:
    """Window ``[start_offset, end_offset)`` of one partition while it fills.

    ``observed``: offsets with a prediction; ``dead_letters``: offsets without one. Offsets never
    seen (taken by another consumer while the partition was away) count in neither.
    """

    __slots__ = ("_first_event", "_first_processed", "_last_event", "_last_processed", "dead_letters", "end_offset",
                 "last_offset", "observed", "partition", "start_offset")

    def __init__(self, partition: int, start_offset: int, end_offset: int) -> None:
        if not 0 <= start_offset < end_offset:
            raise ValueError(f"bad window [{start_offset}, {end_offset})")
        self.partition = partition
        self.start_offset = start_offset
        self.end_offset = end_offset
        self.last_offset = start_offset
        self.observed = 0
        self.dead_letters = 0
        self._first_event: datetime | None = None
        self._last_event: datetime | None = None
        self._first_processed: datetime | None = None
        self._last_processed: datetime | None = None

    @property
    def size(self) -> int:
        return self.end_offset - self.start_offset

    def add(self, offset: int, processed_at: datetime, obs: Observation | None) -> None:
        """One offset of the window: an observation, or ``None`` for a dead letter."""
        if not self.start_offset <= offset < self.end_offset:
            raise ValueError(f"offset {offset} is outside the window [{self.start_offset}, {self.end_offset})")
        self.last_offset = max(self.last_offset, offset)
        processed_at = _aware(processed_at)
        if self._first_processed is None or processed_at < self._first_processed:
            self._first_processed = processed_at
        if self._last_processed is None or processed_at > self._last_processed:
            self._last_processed = processed_at
        if obs is None:
            self.dead_letters += 1
            return
        self.observed += 1
        if obs.event_time is not None:
            event_time = _aware(obs.event_time)
            if self._first_event is None or event_time < self._first_event:
                self._first_event = event_time
            if self._last_event is None or event_time > self._last_event:
                self._last_event = event_time

    def snapshot(self) -> AlertWindow:
        """What a record says of the window: its offsets and what was seen of it so far."""
        if self._first_processed is None or self._last_processed is None:
            raise ValueError("empty window has no bounds")
        return AlertWindow(
            start_offset=self.start_offset,
            end_offset=self.end_offset,
            last_offset=self.last_offset,
            observed=self.observed,
            dead_letters=self.dead_letters,
            first_event_time=self._first_event,
            last_event_time=self._last_event,
            first_processed_at=self._first_processed,
            last_processed_at=self._last_processed,
        )
