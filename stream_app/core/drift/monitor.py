"""DriftMonitor: offset-aligned windows per input partition, each with its own detectors.

Windows
-------
Window k of partition p covers offsets ``[k*W, (k+1)*W)``. Each partition has its own detectors
(one ``OutlierRateDetector``, when the bundle has a reference mix one ``CategoryMixDetector``, and
with ``sequential`` one ``SequentialOutlierDetector``, the CUSUM of ``cusum``; all created lazily on
the partition's first message), so the windows, their verdicts and the
investigate/retrain streak are per partition, and a window always holds the same messages whoever
consumes them. Feed every consumed message of a partition, in offset order: ``update(obs)`` for a
prediction, ``dead_letter(partition, offset, processed_at)`` for a message without one (it occupies
its offset, brings no observation).

A window is judged only by a monitor that saw its first offset:

* Start-up, or a partition seen again after a jump (an offset other than the next expected one: the
  partition came back after a rebalance, or is being replayed): if the offset is not a block start,
  observations are skipped until the next block start. So after a crash the replacement worker,
  which resumes at the last committed offset, recomputes the following blocks exactly as before
  and never alerts on the partial block it resumed in.
* A window closes (its verdict: clean, drifting or inconclusive) when offset ``end - 1`` is seen or
  when an offset ``>= end`` is seen (the tail was never delivered to this monitor).
* A forward jump that stays inside the open window keeps it: the offsets it skipped (consumed by
  another worker while the partition was away) just bring no observation. A backward jump abandons
  the open window (its offsets would be counted twice); it is recomputed from its start if the
  replay reaches it. It also rewinds every detector (``Rewind``), open window or not.

The sequential detector is fed the same observations (so it too starts at a block start and restarts
on a backward jump) but carries its statistic across windows; it is quiet while the partition's
window test has decided the current window or has an ``embedding_drift`` alert firing.

Records
-------
The detectors only decide (``detector``); `PartitionWindows` keeps the partition's observations from
the earliest offset a pending decision could name (``Detector.evidence_start``: the open window, a
CUSUM run) and hands each decision, its window and those observations to ``records.RecordBuilder``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from stream_app.core.drift.alerts import AlertContext, DriftRecord
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.cusum import CusumChannel, SequentialOutlierDetector, default_channels
from stream_app.core.drift.detector import Detector, DetectorInput
from stream_app.core.drift.observation import REWIND, Observation, WindowEnd
from stream_app.core.drift.outlier_window import DEFAULT_ALPHA, DEFAULT_WINDOW, OutlierRateDetector
from stream_app.core.drift.records import (
    DEFAULT_RETRAIN_AFTER,
    DEFAULT_SAMPLE_SIZE,
    RecordBuilder,
    utc_now,
)
from stream_app.core.drift.window import OpenWindow

if TYPE_CHECKING:
    from stream_app.core.bundle import DriftCalibration


class PartitionWindows:
    """The aligned windows of one partition, its detectors and the records of their decisions.

    ``records`` builds the records (default: an anonymous ``RecordBuilder``, for tests of the
    decisions). Windowed detectors must use the same ``window_size``.
    """

    def __init__(self, partition: int, window_size: int, detectors: Sequence[Detector],
                 records: RecordBuilder | None = None) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.partition = partition
        self.window_size = window_size
        self.detectors = list(detectors)
        self.records = RecordBuilder() if records is None else records
        self.window: OpenWindow | None = None
        self.expected: int | None = None  # next offset if the partition is read contiguously
        self._evidence: deque[Observation] = deque()  # offsets ascending, from the earliest evidence_start

    @property
    def retained(self) -> int:
        """Observations kept to explain the next decisions (from the earliest ``evidence_start``)."""
        return len(self._evidence)

    def feed(self, offset: int, processed_at: datetime, obs: Observation | None) -> list[DriftRecord]:
        """One consumed message (``obs`` None for a dead letter); the records it completes."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        out: list[DriftRecord] = []
        window = self.window
        if self.expected is not None and offset < self.expected:
            self._rewind()  # a jump back; also restarts a detector that carries state across windows
        elif window is not None and offset >= window.end_offset:
            out += self._close(window)
        self.expected = offset + 1
        if self.window is None and offset % self.window_size:
            self._prune()
            return out  # in the middle of a block: skip until the next block start
        if self.window is None:
            self.window = OpenWindow(self.partition, offset, offset + self.window_size)
        window = self.window
        window.add(offset, processed_at, obs)
        if obs is not None:
            self._evidence.append(obs)
            out += self._decide(obs, window)
        if offset >= window.end_offset - 1:
            out += self._close(window)
        self._prune()
        return out

    def _decide(self, event: DetectorInput, window: OpenWindow) -> list[DriftRecord]:
        out = []
        for detector in self.detectors:
            if (decision := detector.update(event)) is not None:
                out.append(self.records.record(detector, decision, window, self._evidence))
        return out

    def _close(self, window: OpenWindow) -> list[DriftRecord]:
        self.window = None
        return self._decide(WindowEnd(window.start_offset, window.end_offset), window)

    def _rewind(self) -> None:
        self.window = None
        self._evidence.clear()  # the replay brings these offsets again
        for detector in self.detectors:
            detector.update(REWIND)  # never a decision (the Detector contract)

    def _prune(self) -> None:
        """Drop the observations no pending decision can name any more."""
        starts = [start for d in self.detectors if (start := d.evidence_start) is not None]
        if not starts:
            self._evidence.clear()
            return
        horizon = min(starts)
        while self._evidence and self._evidence[0].offset < horizon:
            self._evidence.popleft()


class DriftMonitor:
    """Per-partition windows, created lazily with ``detectors(partition)``.

    ``update(obs)`` / ``dead_letter(partition, offset, processed_at)`` return the records to
    publish: firing alerts (``EmbeddingDriftAlert``, ``CategoryMixAlert``, ``SequentialDriftAlert``)
    and ``DriftResolved``, built by ``records`` (default: an anonymous ``RecordBuilder``).
    """

    def __init__(self, detectors: Callable[[int], Sequence[Detector]], window_size: int = DEFAULT_WINDOW,
                 records: RecordBuilder | None = None) -> None:
        self._factory = detectors
        self.window_size = int(window_size)
        self.records = RecordBuilder() if records is None else records
        self.partitions: dict[int, PartitionWindows] = {}

    def partition(self, partition: int) -> PartitionWindows:
        state = self.partitions.get(partition)
        if state is None:
            state = PartitionWindows(partition, self.window_size, self._factory(partition), self.records)
            self.partitions[partition] = state
        return state

    def update(self, obs: Observation) -> list[DriftRecord]:
        return self.partition(obs.partition).feed(obs.offset, obs.processed_at, obs)

    def dead_letter(self, partition: int, offset: int, processed_at: datetime) -> list[DriftRecord]:
        return self.partition(partition).feed(offset, processed_at, None)

    @classmethod
    def from_calibration(
        cls,
        calibration: DriftCalibration,
        labels: Sequence[str],
        context: AlertContext,
        window: int = DEFAULT_WINDOW,
        alpha: float = DEFAULT_ALPHA,
        category_alpha: float = DEFAULT_CATEGORY_ALPHA,
        retrain_after: int = DEFAULT_RETRAIN_AFTER,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        clock: Callable[[], datetime] = utc_now,
        sequential: bool | Sequence[CusumChannel] = False,
    ) -> DriftMonitor:
        """Detectors for every partition from the bundle's ``DriftCalibration``, records in ``context``.

        Uses ``calibration.quantile`` (p0 = 1 - quantile), ``calibration.tau`` (reported only),
        ``calibration.centroid_share``, ``calibration.category_share`` (aligned with ``labels``) and
        ``calibration.n_calibration`` (the products those shares were counted on).
        An empty ``category_share`` disables the category-mix detector. ``sequential``: also run the
        CUSUM channels (``True``: ``cusum.default_channels(calibration)``; or the given channels).
        Bad parameters (quantile, alpha, a length mismatch) raise ``ValueError`` here, not on the
        first message.
        """
        quantile = float(calibration.quantile)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"calibration.quantile must be in (0, 1), got {quantile}")
        shares = list(calibration.category_share)
        labels = list(labels)
        channels = default_channels(calibration) if sequential is True else list(sequential or [])
        for channel in channels:
            if channel.cut is None and abs(channel.quantile - quantile) > 1e-12:
                raise ValueError(f"a channel on the outlier flag must be at the calibration's quantile {quantile}, "
                                 f"not {channel.quantile}")
        records = RecordBuilder(context, tau=calibration.tau, reference_centroid_share=calibration.centroid_share,
                                retrain_after=retrain_after, sample_size=sample_size, clock=clock)

        def detectors(partition: int) -> list[Detector]:
            window_test = OutlierRateDetector(window_size=window, expected_rate=1.0 - quantile, alpha=alpha)
            made: list[Detector] = [window_test]
            if shares:
                made.append(CategoryMixDetector(window_size=window, reference_share=shares, labels=labels,
                                                alpha=category_alpha, reference_count=calibration.n_calibration))
            if channels:
                # Quiet while the window test reports the partition: the CUSUM only speaks ahead of it.
                made.append(SequentialOutlierDetector(channels, quiet=lambda: window_test.reporting))
            return made

        detectors(0)  # validate now
        return cls(detectors, window, records)
