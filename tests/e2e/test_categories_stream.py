"""End to end: 2,000 Elo7 products through the real worker; the stream matches the offline evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from stream_app.core.bundle import Bundle
from stream_app.core.pipeline import Pipeline
from stream_app.messages import ProductEvent
from stream_app.schemas import generate
from tests.support.worker_harness import (
    WorkerTopics,
    elo7_event,
    elo7_rows,
    produce_events,
    start_worker,
    wait_for_keys,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
N = 2000


@pytest.fixture(scope="module")
def e2e(broker: str, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    topics = WorkerTopics.create(broker, "e2e")
    worker = start_worker(broker, topics, test_bundle, tmp_path_factory.mktemp("e2e"))
    yield worker, topics
    assert worker.terminate() == 0, worker.tail()


def test_every_product_categorized_with_offline_accuracy(e2e, broker: str, test_bundle: Path) -> None:
    worker, topics = e2e
    rows = elo7_rows(N)
    events = [elo7_event(r) for r in rows.itertuples()]
    truth = dict(zip((str(e["product_id"]) for e in events), rows["category"], strict=True))
    started = time.monotonic()
    produce_events(broker, topics.input, events)
    by_key = wait_for_keys(broker, topics.output, set(truth), timeout=240)
    elapsed = time.monotonic() - started
    assert set(by_key) == set(truth), f"{len(set(truth) - set(by_key))} missing after {elapsed:.0f}s\n{worker.tail()}"

    bundle = Bundle.load(test_bundle)
    schema = generate()["categories.schema.json"]
    for key, docs in list(by_key.items())[:200]:
        jsonschema.validate(docs[0], schema)
        assert str(docs[0]["product_id"]) == key
    first = [docs[0] for docs in by_key.values()]
    assert {d["model_version"] for d in first} == {bundle.version}
    assert all(d["categories"][0]["name"] == d["top_category"] for d in first)
    assert all(d["source"]["topic"] == topics.input for d in first)
    # Each category carries its decision against the bundle's per-category threshold; only the top one
    # may be below it (a best guess), every other listed category is above.
    thresholds = dict(zip(bundle.manifest.labels, bundle.manifest.thresholds, strict=True))
    for d in first:
        assert all(c["above_threshold"] == (c["score"] >= thresholds[c["name"]]) for c in d["categories"])
        assert all(c["above_threshold"] for c in d["categories"][1:])

    # Offline: the same bundle on the same rendered texts, straight through the Pipeline.
    texts = [bundle.manifest.text.render(ProductEvent.model_validate(e).text_fields()) for e in events]
    predictions = Pipeline(bundle, threads=2).predict(texts)
    offline = sum(p.top_category == truth[str(e["product_id"])] for p, e in zip(predictions, events, strict=True)) / N
    stream = sum(by_key[k][0]["top_category"] == truth[k] for k in truth) / N
    print(json.dumps({"rows": N, "seconds": round(elapsed, 1), "stream_accuracy": stream, "offline_accuracy": offline}))
    assert abs(stream - offline) <= 0.005
    assert worker.alive()
