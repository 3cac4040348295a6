"""Bookkeeping shared by the windowed detectors: the open window of a partition and the drift streak.

Windows are aligned to offsets: window k of a partition covers offsets ``[k*W, (k+1)*W)``.
`OpenWindow` is what has been seen of one such window; `DriftStreak` turns the verdicts of the
successive windows of one (partition, detector) into a recommendation and remembers the firing
alert that a clean window resolves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from math import ceil

from stream_app.core.drift.alerts import AlertWindow, Recommendation
from stream_app.core.drift.observation import Observation

# A window counts as clean only if at least this share of its offsets brought an observation: a
# window of mostly dead letters (or mostly missed offsets) says nothing about drift.
MIN_CLEAN_SHARE = 0.5


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so naive and aware times of one window compare."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def min_clean_observations(window_size: int) -> int:
    """Observations a window needs to count as clean (``MIN_CLEAN_SHARE`` of its offsets, at least 1)."""
    return max(1, ceil(MIN_CLEAN_SHARE * window_size))


class OpenWindow:
    """Window ``[start_offset, end_offset)`` of one partition while it fills.

    ``observed``: offsets with a prediction; ``dead_letters``: offsets without one. Offsets never
    seen (taken by another consumer while the partition was away) count in neither.
    """

    __slots__ = ("partition", "start_offset", "end_offset", "last_offset", "observed", "dead_letters",
                 "_first_event", "_last_event", "_first_processed", "_last_processed")

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


class DriftStreak:
    """Verdicts of the successive windows of one (partition, detector).

    ``consecutive``: drifting windows in a row (a clean window resets it; windows this tracker did
    not judge -- inconclusive, or consumed elsewhere while the partition was away -- change
    nothing). ``firing``: alert_id of the last firing alert not resolved yet. A window judged again
    (a replay within the same process, offsets going backwards) does not count twice.
    """

    def __init__(self, retrain_after: int) -> None:
        if retrain_after < 1:
            raise ValueError(f"retrain_after must be >= 1, got {retrain_after}")
        self.retrain_after = retrain_after
        self.consecutive = 0
        self.firing: str | None = None
        self._last_judged = -1  # start offset of the latest window judged

    def drifted(self, window_start: int, alert_id: str) -> int:
        """Record a drifting window; return the consecutive drifting windows to report."""
        if window_start <= self._last_judged:  # judged before: re-send, change nothing
            return max(1, self.consecutive)
        self._last_judged = window_start
        self.consecutive += 1
        self.firing = alert_id
        return self.consecutive

    def clean(self, window_start: int) -> tuple[str, int] | None:
        """Record a clean window; return (alert_id, drifting windows) of the alert it resolves, if any."""
        if window_start <= self._last_judged:
            return None
        self._last_judged = window_start
        ended = (self.firing, self.consecutive) if self.firing is not None else None
        self.consecutive = 0
        self.firing = None
        return ended

    def recommendation(self, consecutive: int | None = None) -> Recommendation:
        count = self.consecutive if consecutive is None else consecutive
        return "retrain" if count >= self.retrain_after else "investigate"
