"""GET /metrics (parsed with the Prometheus parser), /livez and /readyz of the real worker.

The liveness and readiness rules themselves are unit-tested in tests/worker/test_health.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.worker_harness import (
    WorkerTopics,
    elo7_event,
    elo7_rows,
    fashion_event,
    fashion_rows,
    produce,
    produce_events,
    start_worker,
    wait_for_keys,
)

pytestmark = pytest.mark.broker  # a real worker on a real broker (the fixture's or a private one)

EXPECTED = {
    "stream_messages_consumed": "counter",
    "stream_messages_produced": "counter",
    "stream_dead_letters": "counter",
    "stream_batch_size": "histogram",
    "stream_inference_seconds": "histogram",
    "stream_end_to_end_latency_seconds": "histogram",
    "stream_drift_distance": "histogram",
    "stream_outlier_ratio": "gauge",
    "stream_drift_alerts": "counter",
    "stream_batches_in_flight": "gauge",
    "stream_dlq_ratio": "gauge",
    "stream_model_info": "gauge",  # an Info: the text format exposes it as a gauge with labels
    "stream_consumer_lag": "gauge",
}
# Products sent by test_metrics_after_traffic, and the worker's STREAM_DRIFT_WINDOW: the outlier gauge
# (set once per window of predictions, all partitions together) then covers exactly those products.
PRODUCTS = 150
FASHION = 30  # out-of-distribution products among them: the outlier share is not the gauge's initial 0


@pytest.fixture(scope="module")
def observed(broker: str, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    topics = WorkerTopics.create(broker, "obs")
    worker = start_worker(broker, topics, test_bundle, tmp_path_factory.mktemp("obs"), ready=False,
                          liveness_stall_seconds=1, drift_window=PRODUCTS)
    # Readiness over start-up: the web server answers once the bundle is loaded.
    statuses = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status = worker.get("/readyz", timeout=2)[0]
        except OSError:
            status = None
        if status is not None:
            statuses.append(status)
        if status == 200 or not worker.alive():
            break
        time.sleep(0.1)
    yield worker, topics, statuses
    assert worker.terminate() == 0, worker.tail()


def test_readyz_names_the_serving_model_and_its_partitions(observed, test_bundle: Path) -> None:
    """Ready once the bundle is loaded (with or without partitions: a standby is ready too, see
    test_a_worker_without_partitions_is_a_ready_standby); the body names the model that serves."""
    from stream_app.core.bundle import Bundle

    worker, _, statuses = observed
    assert statuses and statuses[-1] == 200 and 503 not in statuses, worker.tail()
    deadline = time.monotonic() + 30
    body: dict[str, object] = {}
    while time.monotonic() < deadline:  # until the group join assigned the partitions
        status, text = worker.get("/readyz")
        body = json.loads(text)
        if "input partition(s) assigned" in str(body["detail"]):
            break
        time.sleep(0.3)
    assert status == 200 and body["status"] == "ready", body
    assert body["model_version"] == Bundle.load(test_bundle).version and body["shadow_version"] is None
    assert "3 input partition(s) assigned" in str(body["detail"]), body


def test_metrics_after_traffic(observed, broker: str, test_bundle: Path) -> None:
    worker, topics, _ = observed
    events = [elo7_event(r) for r in elo7_rows(PRODUCTS - FASHION, seed=3).itertuples()]
    events += [fashion_event(r) for r in fashion_rows(FASHION, seed=3).itertuples()]
    produce_events(broker, topics.input, events)
    produce(broker, topics.input, [(b"bad-1", b"{nope"), (b"bad-2", b"[]")])
    by_key = wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in events}, timeout=120)
    time.sleep(0.5)  # counters are updated right after the acknowledgements

    status, text = worker.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in EXPECTED.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, (name, families[name].type)

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(s.value for s in families[family].samples if s.name == sample and
                   all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("stream_messages_consumed", "stream_messages_consumed_total") == 152
    assert value("stream_messages_produced", "stream_messages_produced_total", topic=topics.output) == 150
    assert value("stream_messages_produced", "stream_messages_produced_total", topic=topics.dlq) == 2
    assert value("stream_dead_letters", "stream_dead_letters_total", reason="invalid_json") == 1
    assert value("stream_dead_letters", "stream_dead_letters_total", reason="not_an_object") == 1
    assert value("stream_batch_size", "stream_batch_size_sum") == 152
    assert value("stream_inference_seconds", "stream_inference_seconds_count") >= 1
    assert value("stream_end_to_end_latency_seconds", "stream_end_to_end_latency_seconds_count") == 150
    assert value("stream_drift_distance", "stream_drift_distance_count") == 150
    assert value("stream_batches_in_flight", "stream_batches_in_flight") == 0
    # The window is the PRODUCTS predictions: the gauge is the share of them the worker flagged as outliers.
    outliers = sum(docs[0]["drift"]["outlier"] for docs in by_key.values())
    assert len(by_key) == PRODUCTS and outliers > 0
    assert value("stream_outlier_ratio", "stream_outlier_ratio") == pytest.approx(outliers / PRODUCTS, abs=1e-12)
    info = next(s for s in families["stream_model_info"].samples if s.name == "stream_model_info")
    assert info.labels["model_version"] and info.labels["encoder"] and "," in info.labels["labels"]


def test_livez_idle_worker_is_alive(observed) -> None:
    worker, _, _ = observed
    time.sleep(1.5)  # longer than STREAM_LIVENESS_STALL_SECONDS=1, with nothing waiting
    status, body = worker.get("/livez")
    assert status == 200, body


@pytest.mark.slow
def test_livez_fails_when_the_loop_stalls(test_bundle: Path, tmp_path: Path) -> None:
    """Freeze a private broker while a batch waits for its acknowledgements: no progress with messages
    waiting -> 503 after STREAM_LIVENESS_STALL_SECONDS; thaw it -> the worker recovers -> 200."""
    import os
    import signal

    from stream_app.broker import recorded_pid, running_broker

    with running_broker() as address:
        pid = recorded_pid(int(address.rsplit(":", 1)[1]))
        assert pid is not None
        topics = WorkerTopics.create(address, "stall")
        worker = start_worker(address, topics, test_bundle, tmp_path, liveness_stall_seconds=2)
        try:
            events = [elo7_event(r) for r in elo7_rows(200, seed=4).itertuples()]
            produce_events(address, topics.input, events)
            # Freeze the broker (SIGSTOP) as soon as the worker holds records: its produce
            # acknowledgements, fetches and commits all hang.
            deadline = time.monotonic() + 30
            frozen = False
            while time.monotonic() < deadline:
                metrics = worker.get("/metrics")[1]
                if "stream_messages_consumed_total 0.0" not in metrics:
                    os.kill(pid, signal.SIGSTOP)
                    frozen = True
                    break
                time.sleep(0.02)
            assert frozen, "worker consumed nothing"
            try:
                statuses = []
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    status, body = worker.get("/livez")
                    statuses.append(status)
                    if status == 503:
                        break
                    time.sleep(0.3)
                assert statuses[-1] == 503, f"livez never failed while stalled: {body}"
                assert "waiting" in body
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_for_keys(address, topics.output, {str(e["product_id"]) for e in events}, timeout=90)
            assert worker.get("/livez")[0] == 200
        finally:
            worker.terminate()


@pytest.mark.slow
def test_a_worker_without_partitions_is_a_ready_standby(broker: str, test_bundle: Path, tmp_path: Path) -> None:
    """Replicas == partitions during a rolling update: the surge pod gets no partition and must still
    be ready, or the rollout (maxUnavailable 0) would wait for it forever."""
    topics = WorkerTopics.create(broker, "standby", partitions=1)
    first = start_worker(broker, topics, test_bundle, tmp_path / "a", partitions=1)
    second = start_worker(broker, topics, test_bundle, tmp_path / "b", ready=False, partitions=1,
                          group_id=first.env["STREAM_GROUP_ID"])
    try:
        second.wait_ready(timeout=60)
        details: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the group has settled: one holds the partition
            details = [w.get("/readyz")[1] for w in (first, second)]
            if sum("standby" in d for d in details) == 1 and any("1 input partition" in d for d in details):
                break
            time.sleep(0.5)
        assert sum("standby" in d for d in details) == 1, details
        assert all(w.get("/readyz")[0] == 200 for w in (first, second))
        # No tables: Faust's table and router endpoints would only expose internals.
        assert [first.get(path)[0] for path in ("/router/", "/table/")] == [404, 404]
    finally:
        assert first.terminate() == 0, first.tail()
        assert second.terminate() == 0, second.tail()
