"""`make run-loop` end to end on the real broker: a drift alert recommends retraining, the candidate
retrained on the labelled sample is compared and promoted, the running worker swaps to it without a
restart, and the same kind of drifting stream raises fewer embedding_drift alerts afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from stream_app.demo_loop import LoopConfig, run_loop

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_the_loop_closes_on_a_live_worker(broker: str, test_bundle: Path, datasets_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    config = LoopConfig(
        bundle=test_bundle, datasets_dir=datasets_dir, brokers=broker, partitions=2, drift_window=100,
        retrain_after=2, warmup_windows=1, drift_windows=3, fashion_share=0.15, labelled=500, retrain_sample=1500,
        heldout_elo7=1000, heldout_fashion=200, speed_rounds=0, poll_seconds=0.5, workdir=tmp_path / "loop", show=2,
    )
    result = run_loop(config, Console(width=160, highlight=False, soft_wrap=True))
    summary = {k: v for k, v in vars(result).items() if k != "workdir"}

    assert result.retrain_recommended, summary  # the trigger was a `retrain` recommendation, not the fallback
    assert result.before["retrain_recommendations"] >= 1 and result.before["embedding_drift"] >= 1, summary
    assert result.verdict == "promote" and result.promoted, summary
    assert result.candidate and result.candidate != result.serving_before
    # swapped in place: the pid the loop started is the one serving the candidate, never restarted
    assert result.swapped and result.serving_after == result.candidate, summary
    assert result.worker_pid == result.worker_pid_after and result.worker_alive_after_swap and result.worker_starts == 1
    assert result.swaps_total == 1 and result.consumed_total == 1400, summary  # counters of one process
    assert result.worker_exit == 0
    assert result.before["versions"] == [result.serving_before] and result.after["versions"] == [result.candidate]
    # the same kind of stream, the same number of messages and windows: fewer embedding_drift alerts
    assert result.after["messages"] == result.before["messages"] == 600
    assert result.after["embedding_drift_per_1000"] < result.before["embedding_drift_per_1000"], summary
    assert result.after["fashion_outlier_share"] < result.before["fashion_outlier_share"], summary
    assert result.after["fashion_as_new_category"] > 0.5 and result.before["fashion_as_new_category"] == 0, summary
    assert not (tmp_path / "loop").exists()  # cleaned up after a successful run
    print(f"loop test: {time.monotonic() - started:.0f} s; {summary['seconds']}")
