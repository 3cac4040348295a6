"""Bookkeeping shared by the windowed detectors: bounds of a window and the drift streak."""

from __future__ import annotations

from datetime import UTC, datetime

from stream_app.core.drift.alerts import AlertWindow, PartitionRange, Recommendation
from stream_app.core.drift.observation import Observation


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so naive and aware times of one window compare."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class WindowBounds:
    """Accumulates offsets per partition and time bounds of the observations of one window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._ranges: dict[int, list[int]] = {}  # partition -> [min offset, max offset, count]
        self._first_event: datetime | None = None
        self._last_event: datetime | None = None
        self._first_processed: datetime | None = None
        self._last_processed: datetime | None = None

    def add(self, obs: Observation) -> None:
        r = self._ranges.get(obs.partition)
        event_time = _aware(obs.event_time) if obs.event_time is not None else None
        processed_at = _aware(obs.processed_at)
        if r is None:
            self._ranges[obs.partition] = [obs.offset, obs.offset, 1]
        else:
            r[0] = min(r[0], obs.offset)
            r[1] = max(r[1], obs.offset)
            r[2] += 1
        if event_time is not None:
            if self._first_event is None or event_time < self._first_event:
                self._first_event = event_time
            if self._last_event is None or event_time > self._last_event:
                self._last_event = event_time
        if self._first_processed is None or processed_at < self._first_processed:
            self._first_processed = processed_at
        if self._last_processed is None or processed_at > self._last_processed:
            self._last_processed = processed_at

    def snapshot(self) -> AlertWindow:
        if self._first_processed is None or self._last_processed is None:
            raise ValueError("empty window has no bounds")
        return AlertWindow(
            partitions=[
                PartitionRange(partition=p, start_offset=r[0], end_offset=r[1], count=r[2])
                for p, r in sorted(self._ranges.items())
            ],
            first_event_time=self._first_event,
            last_event_time=self._last_event,
            first_processed_at=self._first_processed,
            last_processed_at=self._last_processed,
        )


class DriftStreak:
    """Consecutive drifting windows -> recommendation; a clean window resets the streak."""

    def __init__(self, retrain_after: int) -> None:
        if retrain_after < 1:
            raise ValueError(f"retrain_after must be >= 1, got {retrain_after}")
        self.retrain_after = retrain_after
        self.consecutive = 0

    def drifted(self) -> int:
        self.consecutive += 1
        return self.consecutive

    def clean(self) -> None:
        self.consecutive = 0

    def recommendation(self) -> Recommendation:
        return "retrain" if self.consecutive >= self.retrain_after else "investigate"
