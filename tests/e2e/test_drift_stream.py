"""Drift through the stream: in-distribution traffic raises no alert; fashion products raise
embedding_drift within two windows of a partition, in records a pager can deduplicate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from stream_app.messages import drift_alert_adapter
from stream_app.schemas import SCHEMA_DIR
from tests.support.worker_harness import (
    PARTITIONS,
    WorkerTopics,
    collect_json,
    elo7_event,
    elo7_rows,
    fashion_event,
    fashion_rows,
    produce_events,
    start_worker,
    wait_for_keys,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
WINDOW = 150


def test_drift_alerts_follow_the_distribution(broker: str, test_bundle: Path, tmp_path: Path) -> None:
    topics = WorkerTopics.create(broker, "drift")
    worker = start_worker(broker, topics, test_bundle, tmp_path, drift_window=WINDOW, worker_id="drift-pod-1",
                          group_id=f"drift-{topics.input}")

    # About WINDOW messages per partition: whole in-distribution windows.
    elo7 = [elo7_event(r) for r in elo7_rows(PARTITIONS * WINDOW, seed=21).itertuples()]
    produce_events(broker, topics.input, elo7)
    wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in elo7}, timeout=120)
    alerts = collect_json(broker, topics.drift, timeout=3, partitions=1)
    assert alerts == [], f"in-distribution traffic raised {[a['type'] for a in alerts]}"

    # About 2/3 of a window per partition: enough outliers to decide embedding_drift in each.
    fashion = [fashion_event(r) for r in fashion_rows(2 * WINDOW, seed=21).itertuples()]
    produce_events(broker, topics.input, fashion)
    wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in fashion}, timeout=120)
    alerts = collect_json(broker, topics.drift, timeout=5, partitions=1)
    kinds = [a["type"] for a in alerts]
    assert "embedding_drift" in kinds, f"no embedding_drift within two windows of fashion products: {kinds}"
    adapter = drift_alert_adapter()
    schema = Draft202012Validator(json.loads((SCHEMA_DIR / "drift.schema.json").read_text(encoding="utf-8")))
    for alert in alerts:
        assert alert["_key"] == alert["type"]
        doc = {k: v for k, v in alert.items() if not k.startswith("_")}
        adapter.validate_python(doc)
        schema.validate(doc)
        assert alert["status"] == "firing"
        assert (alert["topic"], alert["group_id"], alert["worker_id"]) == (
            topics.input, f"drift-{topics.input}", "drift-pod-1")
        window = alert["window"]
        assert 0 <= alert["partition"] < PARTITIONS
        assert window["start_offset"] % WINDOW == 0 and window["end_offset"] == window["start_offset"] + WINDOW
        assert window["start_offset"] <= window["last_offset"] < window["end_offset"]
    windows = [(a["type"], a["partition"], a["window"]["start_offset"]) for a in alerts]
    assert len(set(windows)) == len(windows), f"two alerts for one window: {windows}"
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    drift = next(a for a in alerts if a["type"] == "embedding_drift")
    assert drift["outliers"] >= drift["critical_count"] == drift["thresholds"]["critical_count"]
    assert drift["recommendation"] == "investigate" and drift["thresholds"]["window_size"] == WINDOW
    assert any(pid.startswith("fashion-") for pid in drift["outlier_sample"])
    assert worker.terminate() == 0, worker.tail()
