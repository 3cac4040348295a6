"""Drift through the stream: in-distribution traffic raises no alert; fashion products raise
embedding_drift within two windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_app.messages import drift_alert_adapter
from tests.worker_harness import WorkerTopics, collect_json, elo7_event, elo7_rows, fashion_event, fashion_rows, \
    produce_events, start_worker, wait_for_keys

pytestmark = [pytest.mark.broker, pytest.mark.slow]
WINDOW = 150


def test_drift_alerts_follow_the_distribution(broker: str, test_bundle: Path, tmp_path: Path) -> None:
    topics = WorkerTopics.create(broker, "drift")
    worker = start_worker(broker, topics, test_bundle, tmp_path, drift_window=WINDOW)

    elo7 = [elo7_event(r) for r in elo7_rows(3 * WINDOW, seed=21).itertuples()]
    produce_events(broker, topics.input, elo7)
    wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in elo7}, timeout=120)
    alerts = collect_json(broker, topics.drift, timeout=3, partitions=1)
    assert alerts == [], f"in-distribution traffic raised {[a['type'] for a in alerts]}"

    fashion = [fashion_event(r) for r in fashion_rows(2 * WINDOW, seed=21).itertuples()]
    produce_events(broker, topics.input, fashion)
    wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in fashion}, timeout=120)
    alerts = collect_json(broker, topics.drift, timeout=5, partitions=1)
    kinds = [a["type"] for a in alerts]
    assert "embedding_drift" in kinds, f"no embedding_drift within two windows of fashion products: {kinds}"
    adapter = drift_alert_adapter()
    for alert in alerts:
        assert alert["_key"] == alert["type"]
        adapter.validate_python({k: v for k, v in alert.items() if not k.startswith("_")})
    drift = next(a for a in alerts if a["type"] == "embedding_drift")
    assert drift["outliers"] >= drift["critical_count"] and drift["recommendation"] == "investigate"
    assert any(pid.startswith("fashion-") for pid in drift["outlier_sample"])
    print(json.dumps({"alerts": kinds, "outliers": drift["outliers"], "n": drift["n"]}))
    assert worker.terminate() == 0, worker.tail()
