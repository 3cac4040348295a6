"""The liveness and readiness rules behind /livez and /readyz (`stream_app.worker.health`).

The endpoints of the running worker are checked in tests/e2e/test_worker_endpoints.py.
"""

from __future__ import annotations

from stream_app.worker.health import liveness, readiness


def test_liveness_rule() -> None:
    assert liveness(now=100, last_progress=0, waiting=0, stall_seconds=60).status == 200
    assert liveness(now=100, last_progress=50, waiting=5, stall_seconds=60).status == 200
    stalled = liveness(now=100, last_progress=10, waiting=5, stall_seconds=60)
    assert stalled.status == 503 and "5 message" in stalled.detail


def test_readiness_rule() -> None:
    assert readiness(False, 3).status == 503
    # A standby (no partition: replicas == partitions during a rolling update) is ready.
    assert readiness(True, 0).status == 200 and "standby" in readiness(True, 0).detail
    assert readiness(True, 2).status == 200
    broken = readiness(True, 2, broken="ModelBroken: canary failed")
    assert broken.status == 503 and "canary failed" in broken.detail
