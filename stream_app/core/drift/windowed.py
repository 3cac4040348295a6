"""What the windowed tests share: the open window's inputs, the drift streak, clean windows.

Windows are aligned to offsets: window k of a partition covers offsets ``[k*W, (k+1)*W)``.
`WindowedTest` is the ``Detector`` machinery of a test that judges such windows (``outlier_window``,
``category_mix``); `DriftStreak` turns the verdicts of the successive windows into the streak a
firing decision reports and remembers the firing window that a clean window resolves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from math import ceil

from stream_app.core.drift.detector import Decision, DetectorInput
from stream_app.core.drift.observation import Observation, Rewind, WindowEnd

# A window counts as clean only if at least this share of its offsets brought an observation: a
# window of mostly dead letters (or mostly missed offsets) says nothing about drift.
MIN_CLEAN_SHARE = 0.5


def min_clean_observations(window_size: int) -> int:
    """Observations a window needs to count as clean (``MIN_CLEAN_SHARE`` of its offsets, at least 1)."""
    return max(1, ceil(MIN_CLEAN_SHARE * window_size))


class DriftStreak:
    """Verdicts of the successive windows of one (partition, detector).

    ``consecutive``: drifting windows in a row (a clean window resets it; windows this tracker did
    not judge -- inconclusive, or consumed elsewhere while the partition was away -- change
    nothing). ``firing``: ``[start, end)`` of the last drifting window not resolved yet. A window
    judged again (a replay within the same process, offsets going backwards) does not count twice.
    """

    def __init__(self) -> None:
        self.consecutive = 0
        self.firing: tuple[int, int] | None = None
        self._last_judged = -1  # start offset of the latest window judged

    def drifted(self, start: int, end: int) -> int:
        """Record the drifting window ``[start, end)``; return the consecutive drifting windows to report."""
        if start <= self._last_judged:  # judged before: re-send, change nothing
            return max(1, self.consecutive)
        self._last_judged = start
        self.consecutive += 1
        self.firing = (start, end)
        return self.consecutive

    def clean(self, start: int) -> tuple[tuple[int, int], int] | None:
        """Record a clean window; return (firing window, drifting windows) of the episode it ends, if any."""
        if start <= self._last_judged:
            return None
        self._last_judged = start
        ended = (self.firing, self.consecutive) if self.firing is not None else None
        self.consecutive = 0
        self.firing = None
        return ended


class WindowedTest(ABC):
    """A ``Detector`` that tests the aligned windows of ``window_size`` offsets of ONE partition.

    Subclasses count in ``_observe`` (a firing decision as soon as the window's verdict is settled,
    at most one per window), judge the window in ``_judge`` at its ``WindowEnd`` and forget its
    counts in ``_forget_window`` (after a ``WindowEnd``, on a ``Rewind``, on ``reset``). The streak
    survives a ``Rewind`` (a replayed window must not count twice), not a ``reset``.
    """

    name: str

    def __init__(self, window_size: int) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window_size = int(window_size)
        self._min_clean = min_clean_observations(self.window_size)
        self._streak = DriftStreak()
        self._window_start: int | None = None  # of the open window, once it has an observation

    @property
    def consecutive_windows(self) -> int:
        """Drifting windows in a row so far (the current window counts once it has fired)."""
        return self._streak.consecutive

    @property
    def firing(self) -> tuple[int, int] | None:
        """``[start, end)`` of the last drifting window not resolved yet."""
        return self._streak.firing

    @property
    def evidence_start(self) -> int | None:
        return self._window_start

    def reset(self) -> None:
        """Back to the initial state: no window counts, no episode."""
        self._streak = DriftStreak()
        self._window_start = None
        self._forget_window()

    def update(self, observation: DetectorInput) -> Decision | None:
        if isinstance(observation, WindowEnd):
            try:
                return self._judge(observation)
            finally:
                self._window_start = None
                self._forget_window()
        if isinstance(observation, Rewind):
            self._window_start = None
            self._forget_window()
            return None
        if self._window_start is None:
            self._window_start = observation.offset - observation.offset % self.window_size
        return self._observe(observation, self._window_start)

    def _decision(self, window: tuple[int, int], statistic: float, threshold: float, n: int, p_value: float,
                  ended: tuple[tuple[int, int], int] | None = None) -> Decision:
        """Firing over ``window`` (the streak counts it), or resolved when ``ended`` names the episode."""
        if ended is None:
            return Decision(self.name, "firing", statistic, threshold, *window, n, p_value=p_value,
                            streak=self._streak.drifted(*window))
        resolves, drifted = ended
        return Decision(self.name, "resolved", statistic, threshold, *window, n, p_value=p_value, streak=drifted,
                        resolves=resolves)

    def _ended_episode(self, window: WindowEnd, n: int) -> tuple[tuple[int, int], int] | None:
        """A window of ``n`` observations that did not drift: (firing window, drifting windows) of the
        episode it ends, or None (inconclusive: too few observations; nothing firing; judged before)."""
        if n < self._min_clean:
            return None
        return self._streak.clean(window.start_offset)

    @abstractmethod
    def _observe(self, observation: Observation, window_start: int) -> Decision | None:
        """Count one observation of the window starting at ``window_start``."""

    @abstractmethod
    def _judge(self, window: WindowEnd) -> Decision | None:
        """The window's end: a firing decision, a resolved one, or None."""

    @abstractmethod
    def _forget_window(self) -> None:
        """Drop the open window's counts."""
