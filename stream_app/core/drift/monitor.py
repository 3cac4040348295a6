"""DriftMonitor: offset-aligned windows per input partition, each with its own two detectors.

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
  replay reaches it. It also resets every detector, open window or not.

The sequential detector is fed the same observations (so it too starts at a block start and restarts
on a backward jump) but carries its statistic across windows; it is quiet while the partition's
window test has decided the current window or has an ``embedding_drift`` alert firing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from stream_app.core.drift.alerts import AlertContext, DriftRecord
from stream_app.core.drift.category_mix import DEFAULT_CATEGORY_ALPHA, CategoryMixDetector
from stream_app.core.drift.cusum import CusumChannel, SequentialOutlierDetector, default_channels
from stream_app.core.drift.observation import Observation
from stream_app.core.drift.outlier_window import (
    DEFAULT_ALPHA,
    DEFAULT_RETRAIN_AFTER,
    DEFAULT_WINDOW,
    OutlierRateDetector,
)
from stream_app.core.drift.window import OpenWindow, utc_now


class Detector(Protocol):
    """What `PartitionWindows` needs of a detector (every detector class satisfies it)."""

    def update(self, obs: Observation, window: OpenWindow) -> DriftRecord | None: ...

    def close(self, window: OpenWindow) -> DriftRecord | None: ...

    def reset(self) -> None: ...


class PartitionWindows:
    """The aligned windows of one partition and its detectors (see the module docstring)."""

    def __init__(self, partition: int, window_size: int, detectors: Sequence[Detector]) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.partition = partition
        self.window_size = window_size
        self.detectors = list(detectors)
        self.window: OpenWindow | None = None
        self.expected: int | None = None  # next offset if the partition is read contiguously

    def feed(self, offset: int, processed_at: datetime, obs: Observation | None) -> list[DriftRecord]:
        """One consumed message (``obs`` None for a dead letter); the records it completes."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        out: list[DriftRecord] = []
        window = self.window
        if self.expected is not None and offset < self.expected:
            self._abandon()  # a jump back; also restarts a detector that carries state across windows
        elif window is not None and offset >= window.end_offset:
            out += self._close(window)
        self.expected = offset + 1
        if self.window is None:
            if offset % self.window_size:
                return out  # in the middle of a block: skip until the next block start
            self.window = OpenWindow(self.partition, offset, offset + self.window_size)
        window = self.window
        window.add(offset, processed_at, obs)
        if obs is not None:
            for detector in self.detectors:
                if (record := detector.update(obs, window)) is not None:
                    out.append(record)
        if offset >= window.end_offset - 1:
            out += self._close(window)
        return out

    def _close(self, window: OpenWindow) -> list[DriftRecord]:
        self.window = None
        return [r for d in self.detectors if (r := d.close(window)) is not None]

    def _abandon(self) -> None:
        self.window = None
        for detector in self.detectors:
            detector.reset()


class DriftMonitor:
    """Per-partition windows, created lazily with ``detectors(partition)``.

    ``update(obs)`` / ``dead_letter(partition, offset, processed_at)`` return the records to
    publish: firing alerts (``EmbeddingDriftAlert``, ``CategoryMixAlert``) and ``DriftResolved``.
    """

    def __init__(self, detectors: Callable[[int], Sequence[Detector]], window_size: int = DEFAULT_WINDOW) -> None:
        self._factory = detectors
        self.window_size = int(window_size)
        self.partitions: dict[int, PartitionWindows] = {}

    def partition(self, partition: int) -> PartitionWindows:
        state = self.partitions.get(partition)
        if state is None:
            state = PartitionWindows(partition, self.window_size, self._factory(partition))
            self.partitions[partition] = state
        return state

    def update(self, obs: Observation) -> list[DriftRecord]:
        return self.partition(obs.partition).feed(obs.offset, obs.processed_at, obs)

    def dead_letter(self, partition: int, offset: int, processed_at: datetime) -> list[DriftRecord]:
        return self.partition(partition).feed(offset, processed_at, None)

    @classmethod
    def from_calibration(
        cls,
        calibration: Any,
        labels: Sequence[str],
        context: AlertContext,
        window: int = DEFAULT_WINDOW,
        alpha: float = DEFAULT_ALPHA,
        category_alpha: float = DEFAULT_CATEGORY_ALPHA,
        retrain_after: int = DEFAULT_RETRAIN_AFTER,
        sample_size: int = 10,
        clock: Callable[[], datetime] = utc_now,
        sequential: bool | Sequence[CusumChannel] = False,
    ) -> DriftMonitor:
        """Detectors for every partition from the bundle's ``DriftCalibration`` (duck-typed).

        Uses ``calibration.quantile`` (p0 = 1 - quantile), ``calibration.tau`` (reported only),
        ``calibration.centroid_share`` and ``calibration.category_share`` (aligned with ``labels``).
        An empty ``category_share`` disables the category-mix detector. ``sequential``: also run the
        CUSUM channels (``True``: ``cusum.default_channels(calibration)``; or the given channels).
        Bad parameters (quantile, alpha, a length mismatch) raise ``ValueError`` here, not on the
        first message.
        """
        quantile = float(calibration.quantile)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"calibration.quantile must be in (0, 1), got {quantile}")
        tau = getattr(calibration, "tau", None)
        centroid_share = list(getattr(calibration, "centroid_share", []) or [])
        shares = list(getattr(calibration, "category_share", []) or [])
        labels = list(labels)
        channels = default_channels(calibration) if sequential is True else list(sequential or [])
        for channel in channels:
            if channel.cut is None and abs(channel.quantile - quantile) > 1e-12:
                raise ValueError(f"a channel on the outlier flag must be at the calibration's quantile {quantile}, "
                                 f"not {channel.quantile}")

        def detectors(partition: int) -> list[Detector]:
            window_test = OutlierRateDetector(
                window_size=window,
                expected_rate=1.0 - quantile,
                alpha=alpha,
                retrain_after=retrain_after,
                reference_centroid_share=centroid_share,
                context=context,
                tau=None if tau is None else float(tau),
                sample_size=sample_size,
                clock=clock,
            )
            made: list[Detector] = [window_test]
            if shares:
                made.append(
                    CategoryMixDetector(
                        window_size=window,
                        reference_share=shares,
                        labels=labels,
                        alpha=category_alpha,
                        retrain_after=retrain_after,
                        context=context,
                        clock=clock,
                    )
                )
            if channels:
                made.append(
                    SequentialOutlierDetector(
                        channels,
                        context=context,
                        tau=None if tau is None else float(tau),
                        reference_centroid_share=centroid_share,
                        sample_size=sample_size,
                        quiet=lambda: window_test.firing is not None or window_test.outliers >= window_test.critical,
                        clock=clock,
                    )
                )
            return made

        detectors(0)  # validate now
        return cls(detectors, window)
