"""The model lifecycle on the real broker: hot swap under load, a corrupt candidate refused, shadow scoring."""

from __future__ import annotations

import itertools
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from stream_app.core.store import SERVING_FILE, BundleStore
from tests.fixtures.bundle import make_variant
from tests.support.worker_harness import (
    WorkerProcess,
    WorkerTopics,
    collect_json,
    elo7_event,
    elo7_rows,
    produce_events,
    start_worker,
    wait_for_keys,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _serving(worker: WorkerProcess) -> dict[str, object]:
    return json.loads(worker.get("/readyz")[1])


def _wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def store(test_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[BundleStore, list[str]]:
    root = tmp_path_factory.mktemp("store")
    variants = [make_variant(test_bundle, root.parent / f"variant-{root.name}-{i}", f"swap-{i}") for i in range(2)]
    bundles = BundleStore(root / "bundles")
    bundles.root.mkdir()
    versions = [bundles.add(v) for v in variants]
    bundles.promote(versions[0])
    return bundles, versions


def test_swap_under_load_loses_nothing_and_switches_once_per_partition(
        broker: str, store: tuple[BundleStore, list[str]], tmp_path: Path) -> None:
    bundles, (old, new) = store
    bundles.promote(old)
    topics = WorkerTopics.create(broker, "swap")
    worker = start_worker(broker, topics, bundles.root, tmp_path, bundle_store=bundles.root, bundle_poll_seconds=0.3,
                          shadow_topic=f"shadow-{uuid.uuid4().hex[:8]}")
    pid = worker.proc.pid if worker.proc else None
    try:
        first_model = worker.model_processes()
        assert len(first_model) == 1, first_model
        events = [elo7_event(r) for r in elo7_rows(900, seed=21).itertuples()]
        keys = {str(e["product_id"]) for e in events}
        produce_events(broker, topics.input, events[:600])
        collect_json(broker, topics.output, until=150, timeout=90)
        bundles.promote(new)  # mid-stream: the worker swaps between micro-batches
        _wait_until(lambda: _serving(worker)["model_version"] == new)
        produce_events(broker, topics.input, events[600:])
        by_key = wait_for_keys(broker, topics.output, keys, timeout=180)
        assert set(by_key) == keys, f"{len(keys - set(by_key))} lost across the swap\n{worker.tail()}"
        outputs = [doc for docs in by_key.values() for doc in docs]
        assert {d["model_version"] for d in outputs} == {old, new}
        switches, gaps = 0, []
        for partition in {d["source"]["partition"] for d in outputs}:
            ordered = sorted((d for d in outputs if d["source"]["partition"] == partition),
                             key=lambda d: d["source"]["offset"])
            versions = [d["model_version"] for d in ordered]
            flips = sum(a != b for a, b in itertools.pairwise(versions))
            assert flips <= 1 and versions[0] == old, f"partition {partition}: {versions}"
            switches += flips
        assert switches >= 1
        times = sorted(time.mktime(time.strptime(d["processed_at"][:19], "%Y-%m-%dT%H:%M:%S"))
                       + float("0." + d["processed_at"][20:26]) for d in outputs)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        print(json.dumps({"outputs": len(outputs), "switched_partitions": switches,
                          "longest_gap_s": round(max(gaps), 3)}))
        assert worker.proc is not None and worker.proc.pid == pid and worker.alive()
        # The swapped-out model's process ends once its last batch is done: one model process, the new one.
        _wait_until(lambda: len(worker.model_processes()) == 1, timeout=30)
        assert worker.model_processes() != first_model
    finally:
        assert worker.terminate() == 0, worker.tail()


def test_a_corrupt_bundle_is_refused_and_the_old_one_keeps_serving(
        broker: str, store: tuple[BundleStore, list[str]], tmp_path: Path) -> None:
    bundles, (old, new) = store
    bundles.promote(old)
    # Disk rot after promotion: the store verified it, the copy on disk changed since.
    rotten = f"{new}-rotten"
    shutil.copytree(bundles.version_path(new), bundles.root / rotten)
    model_file = next(p for p in (bundles.root / rotten).glob("*.onnx"))
    data = bytearray(model_file.read_bytes())
    data[4096] ^= 0xFF
    model_file.write_bytes(bytes(data))
    topics = WorkerTopics.create(broker, "rot")
    worker = start_worker(broker, topics, bundles.root, tmp_path, bundle_store=bundles.root, bundle_poll_seconds=0.3,
                          shadow_topic=f"shadow-{uuid.uuid4().hex[:8]}")
    try:
        pointer = json.loads((bundles.root / SERVING_FILE).read_text())
        (bundles.root / SERVING_FILE).write_text(json.dumps({**pointer, "version": rotten, "sequence": 999}))
        _wait_until(lambda: _serving(worker)["refused_bundle"] is not None)
        state = _serving(worker)
        assert state["model_version"] == old and rotten in str(state["refused_bundle"])
        assert "sha256" in str(state["refused_bundle"])
        assert 'stream_model_swaps_total{result="refused"} 1.0' in worker.get("/metrics")[1]
        events = [elo7_event(r) for r in elo7_rows(100, seed=22).itertuples()]
        produce_events(broker, topics.input, events)
        by_key = wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in events}, timeout=120)
        assert len(by_key) == len(events)
        assert {d["model_version"] for docs in by_key.values() for d in docs} == {old}
    finally:
        bundles.promote(old)
        assert worker.terminate() == 0, worker.tail()


def test_shadow_scores_beside_serving_and_never_reaches_categories(
        broker: str, store: tuple[BundleStore, list[str]], tmp_path: Path) -> None:
    bundles, (old, new) = store
    bundles.promote(old)
    bundles.set_shadow(new)
    shadow_topic = f"shadow-{uuid.uuid4().hex[:8]}"
    topics = WorkerTopics.create(broker, "shadow")
    worker = start_worker(broker, topics, bundles.root, tmp_path, bundle_store=bundles.root, bundle_poll_seconds=0.3,
                          shadow_topic=shadow_topic, shadow_share=0.5, shadow_window=40)
    try:
        _wait_until(lambda: _serving(worker)["shadow_version"] == new)
        events = [elo7_event(r) for r in elo7_rows(300, seed=23).itertuples()]
        produce_events(broker, topics.input, events)
        by_key = wait_for_keys(broker, topics.output, {str(e["product_id"]) for e in events}, timeout=120)
        outputs = [d for docs in by_key.values() for d in docs]
        assert len(by_key) == len(events) and {d["model_version"] for d in outputs} == {old}
        summaries = collect_json(broker, shadow_topic, until=2, timeout=30, partitions=1)
        assert summaries, f"no shadow summary\n{worker.tail()}"
        first = summaries[0]
        assert first["serving_version"] == old and first["shadow_version"] == new
        assert first["messages"] >= 40 and 0.9 <= first["top1_agreement"] <= 1.0  # same weights, other batches
        # Same weights: both models see the same messages, so their drift agrees up to batch padding noise.
        serving_drift, shadow_drift = first["serving_drift"], first["shadow_drift"]
        assert abs(shadow_drift["mean_distance"] - serving_drift["mean_distance"]) <= 0.01
        assert abs(shadow_drift["outlier_share"] - serving_drift["outlier_share"]) <= 0.05
        assert first["shadow_seconds_per_message"] > 0
        def scored() -> float:
            values = [float(line.split()[-1]) for line in worker.get("/metrics")[1].splitlines()
                      if line.startswith("stream_shadow_messages_total ")]
            assert len(values) == 1, values
            return values[0]

        # Half of the 300 products by the (partition, offset) hash: 150 +- 5 sigma (sigma ~8.7), once the
        # shadow's buffer (flushed at STREAM_BATCH_SIZE texts or after 2 s) has been scored.
        _wait_until(lambda: scored() >= 105, timeout=30)
        time.sleep(3.0)
        assert abs(scored() - 150) <= 45, scored()
    finally:
        bundles.clear_shadow()
        assert worker.terminate() == 0, worker.tail()
