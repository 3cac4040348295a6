"""Liveness and readiness decisions. Pure: the adapter passes in what it observed.

Contract:
* live: False only when records are waiting (taken but not yet acknowledged, or buffered in the
  consumer, or known lag) and the processing loop made no progress for ``stall_seconds``. An idle
  worker with nothing to do is live.
* ready: the bundle is loaded and nothing has broken (a broken model or a failed publish makes the
  worker stop; until it has, readiness says why). Holding no input partition does not make a worker
  unready: with as many replicas as partitions, a rolling update's new pod gets a partition only
  after an old pod leaves, so a readiness gate on partitions would hang every rollout. Such a pod
  is a warm standby; the detail says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


def liveness(now: float, last_progress: float, waiting: int, stall_seconds: float) -> Verdict:
    """`waiting`: messages known to wait for processing (0 = idle)."""
    idle_for = max(0.0, now - last_progress)
    if waiting > 0 and idle_for > stall_seconds:
        return Verdict(False, f"stalled: no progress for {idle_for:.1f}s with {waiting} message(s) waiting")
    return Verdict(True, f"ok: last progress {idle_for:.1f}s ago, {waiting} message(s) waiting")


def readiness(
    bundle_loaded: bool, assigned_input_partitions: int, rebalancing: bool = False, broken: str | None = None
) -> Verdict:
    if not bundle_loaded:
        return Verdict(False, "bundle not loaded")
    if broken is not None:
        return Verdict(False, f"stopping: {broken}")
    if assigned_input_partitions <= 0:
        return Verdict(True, "ok: standby, no input partition assigned" + (" (rebalancing)" if rebalancing else ""))
    return Verdict(True, f"ok: {assigned_input_partitions} input partition(s) assigned")
