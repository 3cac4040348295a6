"""The live worker: malformed messages go to the DLQ with their reason; good traffic is unaffected; the
worker stays up.

The classification itself is unit-tested in tests/worker/test_dead_letters.py, the batch path (retries,
acks, refused outputs) in tests/worker/test_batching.py.
"""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import jsonschema
import pytest

from stream_app.messages import DeadLetterReason
from stream_app.schemas import generate
from tests.support.worker_harness import (
    WorkerTopics,
    collect_json,
    elo7_event,
    elo7_rows,
    produce,
    start_worker,
    wait_for_keys,
)

pytestmark = pytest.mark.broker

MAX_BYTES = 20_000

# (kind, value, expected reason); each kind is sent several times with distinct keys.
MALFORMED: list[tuple[str, bytes | None, DeadLetterReason]] = [
    ("latin1", "Caneca de ca\u00e7\u00e3o".encode("latin-1"), DeadLetterReason.NOT_UTF8),
    ("binary", bytes(range(256)), DeadLetterReason.NOT_UTF8),
    ("truncated-json", b'{"product_id": 1, "title": "Cane', DeadLetterReason.INVALID_JSON),
    ("empty", b"", DeadLetterReason.INVALID_JSON),
    ("tombstone", None, DeadLetterReason.INVALID_JSON),
    ("list", b'[{"product_id": 1, "title": "x"}]', DeadLetterReason.NOT_AN_OBJECT),
    ("string", b'"just a string"', DeadLetterReason.NOT_AN_OBJECT),
    ("no-title", b'{"product_id": 5, "tags": "a b"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("blank-title", b'{"product_id": 5, "title": "   "}', DeadLetterReason.SCHEMA_VIOLATION),
    ("no-id", b'{"title": "Caneca"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("bool-id", b'{"product_id": true, "title": "Caneca"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("tags-type", b'{"product_id": 5, "title": "Caneca", "tags": {"a": 1}}', DeadLetterReason.SCHEMA_VIOLATION),
    ("bad-time", b'{"product_id": 5, "title": "Caneca", "event_time": "soon"}', DeadLetterReason.SCHEMA_VIOLATION),
    ("too-large", json.dumps({"product_id": 5, "title": "x" * 70_000}).encode(), DeadLetterReason.TOO_LARGE),
]
FIELD = {"no-title": "title", "blank-title": "title", "no-id": "product_id", "bool-id": "product_id",
         "tags-type": "tags", "bad-time": "event_time"}


@pytest.fixture(scope="module")
def dlq_worker(broker: str, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    topics = WorkerTopics.create(broker, "dlq")
    worker = start_worker(broker, topics, test_bundle, tmp_path_factory.mktemp("dlq"), max_message_bytes=MAX_BYTES,
                          drift_window=100, dlq_alert_ratio=0.1)
    yield worker, topics
    assert worker.terminate() == 0, worker.tail()


def test_malformed_messages_are_dead_lettered(dlq_worker, broker: str) -> None:
    worker, topics = dlq_worker
    bad = [(f"bad-{kind}-{i}".encode(), value, reason, kind)
           for i in range(100) for kind, value, reason in [MALFORMED[i % len(MALFORMED)]]]
    good = [elo7_event(r) for r in elo7_rows(300, seed=5).itertuples()]
    traffic: list[tuple[bytes | None, bytes | None]] = [(k, v) for k, v, _, _ in bad]
    traffic += [(str(e["product_id"]).encode(), json.dumps(e).encode()) for e in good]
    random.Random(3).shuffle(traffic)
    produce(broker, topics.input, traffic)

    good_keys = {str(e["product_id"]) for e in good}
    outputs = wait_for_keys(broker, topics.output, good_keys, timeout=120)
    assert set(outputs) == good_keys
    letters = {d["_key"]: d for d in collect_json(broker, topics.dlq, until=len(bad), timeout=60)}
    assert len(letters) == len(bad), worker.tail()

    schema = generate()["dead-letter.schema.json"]
    for key, value, reason, kind in bad:
        letter = letters[key.decode()]
        jsonschema.validate({k: v for k, v in letter.items() if not k.startswith("_")}, schema)
        assert letter["error"]["reason"] == reason.value, (kind, letter["error"])
        assert letter["source"]["topic"] == topics.input and letter["source"]["offset"] >= 0
        assert base64.b64decode(letter["key"]) == key
        if value is None:
            assert letter["value"] is None and letter["value_size"] == 0
        elif reason is DeadLetterReason.TOO_LARGE:  # over the input limit, yet its copy fits the output limit
            assert letter["value_size"] == len(value) and not letter["value_truncated"]
            assert base64.b64decode(letter["value"]) == value
        else:
            assert base64.b64decode(letter["value"]) == value
        if kind in FIELD:
            assert letter["error"]["field"] == FIELD[kind] and FIELD[kind] in letter["error"]["detail"]
    assert not set(outputs) & {k.decode() for k, *_ in bad}

    assert worker.alive()
    assert worker.get("/livez")[0] == 200
    time.sleep(0.5)
    metrics = worker.get("/metrics")[1]
    assert 'stream_dead_letters_total{reason="schema_violation"}' in metrics
    assert "DEAD-LETTER RATIO" in worker.tail(400)  # 25% of the stream > STREAM_DLQ_ALERT_RATIO=0.1
